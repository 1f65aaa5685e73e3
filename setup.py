"""The optional native part: batch Ed25519 signing without the GIL (agent/_native/edsign.c, libsodium).

Everything else is in pyproject.toml. Without a C compiler or libsodium's headers the build goes on without
it and the agent signs with the cryptography package, in the same format (see agent/_native/__init__.py).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "agent._native.edsign",
            ["agent/_native/edsign.c"],
            libraries=["sodium", "pthread"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        )
    ]
)
