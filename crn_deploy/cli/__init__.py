"""Console entry points: ``main(argv) -> int``, heavy imports after argument parsing."""
