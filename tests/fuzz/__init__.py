"""Coverage-guided fuzzing of the client-facing protocol (atheris), and its corpus."""
