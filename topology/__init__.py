"""The declarative broker topology: the file, its model, compile, plan, apply, export."""
