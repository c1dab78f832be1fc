"""Builds pi2lab's optional native CPU kernels (``pi2lab/kernels/native``) with the system
compiler. Metadata lives in pyproject.toml. Without a compiler the build goes on without
them and pi2lab computes the same results with its pure-JAX kernels (``pi2lab info
--kernels`` says which path runs)."""

import glob

import jax
from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "pi2lab._native",
            sources=sorted(glob.glob("pi2lab/kernels/native/*.cc")),
            depends=sorted(glob.glob("pi2lab/kernels/native/*.h")),
            include_dirs=[jax.ffi.include_dir()],
            language="c++",
            extra_compile_args=[
                "-std=c++17",
                "-O3",
                # lets the compiler vectorise the dot products' reductions
                "-fno-math-errno",
                "-fno-trapping-math",
                "-fassociative-math",
                "-fno-signed-zeros",
                "-Wno-attributes",
                "-Wno-return-type",
            ],
            extra_link_args=["-lpthread"],
            optional=True,
        )
    ]
)
