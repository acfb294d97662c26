"""Fuzzing of every parser of outside input: the targets (shared by the hypothesis properties and
the atheris runner), their seeds, and the corpus and crashers that ``make fuzz`` keeps."""
