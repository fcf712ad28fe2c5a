"""smart-sync domain code. Nothing here does I/O or reads the environment at import time."""
