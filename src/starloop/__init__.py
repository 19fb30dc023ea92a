"""starloop: self-taught reasoning (STaR) and its preference and reward variants for multiple-choice benchmarks."""

__version__ = "0.1.0"
