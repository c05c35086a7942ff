"""Pure risk maths and policy: integers in, integers out, no I/O."""
