"""The optional native parts: batch Ed25519 signing without the GIL (agent/_native/edsign.c, libsodium), and
the receiver's per-event work (agent/_native/restamp.c: OpenSSL's SHA-256, libsodium's Ed25519 checks).

Everything else is in pyproject.toml. Without a C compiler or a library's headers the build goes on without
that part: the agent signs with the cryptography package and stamps in Python, in the same bytes (see
agent/_native/__init__.py).
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
        ),
        Extension(
            "agent._native.restamp",
            ["agent/_native/restamp.c"],
            libraries=["crypto", "sodium"],
            extra_compile_args=["-O2", "-Wall", "-Wextra"],
            optional=True,
        ),
    ]
)
