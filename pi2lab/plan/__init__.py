"""Planning and simulation: hardware profiles, the cost model and planner, the simulator."""
