"""Board profiles. Each folder holds what one kind of board runs (MicroPython or CPython code
and its configuration); the host tools find them here, as package data of qis.boards."""
