"""The ``gradproof`` command line: a thin layer over the library; no numerics here.

:mod:`~gradproof.cli.app` holds the typer application and the exit codes;
:mod:`~gradproof.cli.command` how its commands print their help and option errors;
:mod:`~gradproof.cli.target` loads the user's file, functions and parameters;
:mod:`~gradproof.cli.demo` and :mod:`~gradproof.cli.train` are the ``demo`` and
``train`` commands. Nothing in the library imports this package.
"""
