"""`oasis backtest`: how far off the supply forecasts are (`run`: reading,
building and writing; `accuracy`: the metrics)."""
