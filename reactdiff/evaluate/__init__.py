"""Evaluation: REACT2024 metrics (`metrics`), naive baselines (`baselines`), tables and plots (`report`)."""
