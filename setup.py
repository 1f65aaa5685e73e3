"""The optional native parts: batch Ed25519 signing without the GIL (agent/_native/edsign.c, libsodium), and
the receiver's per-event work (agent/_native/restamp.c: OpenSSL's SHA-256, libsodium's Ed25519 checks).

Everything else is in pyproject.toml. Without a C compiler or a library's headers the build goes on without
that part: the agent signs with the cryptography package and stamps in Python, in the same bytes (see
agent/_native/__init__.py).
"""

from setuptools import Extension, setup


def native(name: str, *libraries: str) -> Extension:
    """agent/_native/NAME.c, optional: a build that fails leaves the agent on its Python paths."""
    return Extension(f"agent._native.{name}", [f"agent/_native/{name}.c"], libraries=list(libraries),
                     extra_compile_args=["-O2", "-Wall", "-Wextra"], optional=True)


setup(ext_modules=[native("edsign", "sodium", "pthread"), native("restamp", "crypto", "sodium")])
