"""Every typed error is exported from pi2lab.errors and pi2lab, and is a Pi2labError."""

import inspect

import pi2lab as pl
from pi2lab import errors


def test_every_error_type_is_exported():
    defined = {
        name
        for name, obj in vars(errors).items()
        if inspect.isclass(obj) and issubclass(obj, errors.Pi2labError)
    }
    assert {"StorageError", "BudgetError", "ConfigError", "MissingExtraError"} <= defined
    assert set(errors.__all__) == defined
    assert defined <= set(pl.__all__)
    for name in defined:
        assert getattr(pl, name) is getattr(errors, name)
        assert issubclass(getattr(pl, name), pl.Pi2labError)
