"""The systems under test, behind one interface so every scenario runs the same code on each."""
