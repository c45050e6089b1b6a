"""The finance domain's configuration: one dataclass family, every field a CLI flag."""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from core.config import DeviceConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig
from domains.finance.model import TFTSpec

__all__ = ["FinanceConfig", "spec_from_config"]


@dataclass
class FinanceConfig(TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    """Data and model settings shared by train, backtest, forecast and score."""

    data: str = field(default="", metadata={"help": "CSV/Parquet of daily prices (date, ticker, close or OHLCV; see domains/finance/README.md); empty = the bundled real panel"})
    tickers: list[str] = field(default_factory=list, metadata={"help": "restrict to these tickers (default: all)"})
    encoder_length: int = field(default=63, metadata={"help": "days of history the TFT reads (encoder length)"})
    horizon: int = field(default=5, metadata={"help": "forecast horizon in trading days"})
    hidden_size: int = field(default=16, metadata={"help": "TFT hidden size"})
    attention_heads: int = field(default=2, metadata={"help": "TFT attention heads"})
    hidden_continuous_size: int = field(default=8, metadata={"help": "TFT size of continuous-variable embeddings"})
    dropout: float = field(default=0.1, metadata={"help": "dropout"})
    epochs: int = field(default=4, metadata={"help": "training epochs"})
    batch_size: int = field(default=128, metadata={"help": "windows per batch"})
    max_batches: int = field(default=50, metadata={"help": "batches per epoch (random windows; 0 = all windows)"})
    lr: float = field(default=3e-3, metadata={"help": "Adam learning rate"})
    threads: int = field(default=1, metadata={"help": "torch CPU threads (1 was the fastest for this small model on the busy shared 2-core machine, in ad-hoc timings)"})


def spec_from_config(cfg: FinanceConfig) -> TFTSpec:
    """The TFTSpec fields the command line exposes; the rest keep TFTSpec's defaults."""
    return TFTSpec(**{f.name: getattr(cfg, f.name) for f in fields(TFTSpec) if hasattr(cfg, f.name)})
