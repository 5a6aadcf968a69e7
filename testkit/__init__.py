"""What the tests (``tests/``) and the long runs (``soak/``) share: a real broker, the worker as a
subprocess, the file-replay reference, the crash scenarios and the hostile stream.

``tests`` and ``soak`` both import this package and never each other.
"""
