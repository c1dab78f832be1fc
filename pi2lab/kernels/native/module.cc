// The Python module pi2lab._native: hands the XLA FFI handlers to jax.ffi.register_ffi_target
// and says which instruction set and how many threads the kernels use.

#include <Python.h>

#include "quant.h"
#include "xla/ffi/api/ffi.h"

XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labSparseFfnF32);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQDot);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQAxpy);
XLA_FFI_DECLARE_HANDLER_SYMBOL(Pi2labQSparseFfn);

static PyObject* Handlers(PyObject*, PyObject*) {
  const std::pair<const char*, void*> targets[] = {
      {"pi2lab_sparse_ffn_f32", reinterpret_cast<void*>(Pi2labSparseFfnF32)},
      {"pi2lab_qdot", reinterpret_cast<void*>(Pi2labQDot)},
      {"pi2lab_qaxpy", reinterpret_cast<void*>(Pi2labQAxpy)},
      {"pi2lab_qsparse_ffn", reinterpret_cast<void*>(Pi2labQSparseFfn)},
  };
  PyObject* out = PyDict_New();
  for (const auto& [name, fn] : targets) {
    PyObject* cap = PyCapsule_New(fn, nullptr, nullptr);
    PyDict_SetItemString(out, name, cap);
    Py_DECREF(cap);
  }
  return out;
}

static PyObject* Describe(PyObject*, PyObject*) {
  __builtin_cpu_init();
  const char* isa = __builtin_cpu_supports("avx512f")   ? "avx512f"
                    : __builtin_cpu_supports("avx2") ? "avx2+fma"
                                                     : "portable";
  return Py_BuildValue("{s:s,s:s,s:i}", "isa", isa, "quant_isa", pi2lab::IsaName(), "threads",
                       pi2lab::GlobalPool().size());
}

static PyObject* SetIsa(PyObject*, PyObject* args) {
  const char* name;
  if (!PyArg_ParseTuple(args, "s", &name)) return nullptr;
  return PyBool_FromLong(pi2lab::SetIsa(name));
}

static PyMethodDef kMethods[] = {
    {"handlers", Handlers, METH_NOARGS, "XLA FFI handlers by target name (PyCapsules)."},
    {"describe", Describe, METH_NOARGS, "The instruction sets the kernels run and the pool size."},
    {"set_isa", SetIsa, METH_VARARGS,
     "Runs the quantized kernels on the named instruction set (avx512vnni, avx2, portable) "
     "if this CPU has it; returns whether it does."},
    {nullptr, nullptr, 0, nullptr}};

static PyModuleDef kModule = {PyModuleDef_HEAD_INIT, "_native",
                              "pi2lab's native CPU kernels (XLA FFI handlers).", -1, kMethods};

PyMODINIT_FUNC PyInit__native() { return PyModule_Create(&kModule); }
