"""Storage controllers and drives (IDE and ATAPI); the images behind them are services/images."""
