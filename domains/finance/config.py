"""The finance domain's configuration: small field groups, combined per command. Every field is a
CLI flag (``core.config``); a command's config holds only the fields it uses.

Groups: :class:`DataConfig` (which prices), :class:`ModelConfig` (the TFT's shape),
:class:`TrainingConfig` (the optimiser loop), :class:`ThreadsConfig`, :class:`CalendarConfig`,
:class:`ZeroShotConfig`, :class:`GarchConfig`; the run-level mixins (tracking, seed, device, resume, model run) come from
``core.config``. Commands: :class:`TrainConfig`, :class:`BacktestConfig`, :class:`ForecastConfig`,
:class:`ScoreConfig`, :class:`TransferConfig`, :class:`InterpretConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from core.config import RESUME_SAME_DATA, DeviceConfig, ModelRunConfig, ResumeConfig, RunConfig, SeedConfig, TrackingConfig, check_ranges
from core.scoring import ScoringConfig
from domains.finance.baselines import BASELINES
from domains.finance.features import DEFAULT_CALENDAR
from domains.finance.model import TFTSpec
from domains.finance.variance import DEFAULT_ENSEMBLE_VARIANCE, DEFAULT_RULE, ENSEMBLE_VARIANCE, VARIANCE_RULES

__all__ = ["DataConfig", "ModelConfig", "TrainingConfig", "ThreadsConfig", "CalendarConfig", "ZeroShotConfig", "GarchConfig", "TrainConfig",
           "BacktestConfig", "ForecastConfig", "ScoreConfig", "TransferConfig", "InterpretConfig", "spec_from_config"]


# train --resume must not change what decides the panel's dates and so its validation days (core.config.ResumeConfig)
HELD_OUT_DAYS = {"resume": "fixed", "resume_why": "these decide the panel and its last --val-days trading days, held out for validation; the checkpoint "
                                                  "has trained on the run's days before its cutoff, which other values could validate on (leakage)"}
# ... and must read the same prices, compared by content (core.runs: the same file under another path continues; other
# prices at the run's path are refused); empty = the bundled panel, compared by name
SAME_PRICES = {"resume": RESUME_SAME_DATA, "resume_why": "the prices decide the panel and its last --val-days trading days, held out for validation; "
                                                         "the checkpoint has trained on the run's days before its cutoff, which other prices could "
                                                         "validate on (leakage)"}


@dataclass
class DataConfig:
    """Which prices: the bundled panel or a user file, and how a user file is validated."""

    data: str = field(default="", metadata={**SAME_PRICES, "help": "CSV/Parquet of daily prices: a long file (date, ticker, close or OHLCV) or one Yahoo/stooq-style series (see domains/finance/README.md); empty = the bundled real panel"})
    ticker: str | None = field(default=None, metadata={**HELD_OUT_DAYS, "help": "name of the series in a single-series --data file (default: the file name, e.g. AAPL.csv -> AAPL); in a long file: keep only this ticker"})
    tickers: list[str] = field(default_factory=list, metadata={**HELD_OUT_DAYS, "help": "restrict to these tickers (default: all)"})
    max_gap_days: int = field(default=10, metadata={"min": 0, "help": "longest run of missing business days inside a ticker's --data history before the file is refused"})
    min_history: int = field(default=100, metadata={**HELD_OUT_DAYS, "min": 2, "why": "a ticker needs at least 2 prices, one return", "help": "tickers of a --data file with fewer daily prices are dropped (listed in the run's data_warnings.csv)"})

    def __post_init__(self) -> None:
        if isinstance(self.tickers, str):  # TrainConfig(tickers="AAPL") means one ticker, not A, A, P, L
            self.tickers = [self.tickers]
        self.tickers = list(dict.fromkeys(self.tickers))  # --tickers AAPL AAPL: one ticker (score's work items must be unique)
        # numeric flags outside what can work (declared per field: "min", "above", "below") failed deep inside torch or
        # pytorch-forecasting with tracebacks; every command's config includes DataConfig, so this checks configs built in code too
        check_ranges(self)

    def data_options(self) -> dict:
        """Keyword arguments of ``domains.finance.data.load_panel_data`` besides data/tickers."""
        return {"ticker": self.ticker, "max_gap_days": self.max_gap_days, "min_history": self.min_history}


@dataclass
class ModelConfig:
    """The TFT's shape (``TFTSpec``); its observed inputs come from the data (``features.observed_inputs``)."""

    encoder_length: int = field(default=63, metadata={"min": 1, "help": "days of history the TFT reads (encoder length)"})
    horizon: int = field(default=5, metadata={"min": 1, "help": "forecast horizon in trading days"})
    hidden_size: int = field(default=16, metadata={"min": 1, "help": "TFT hidden size"})
    attention_heads: int = field(default=2, metadata={"min": 1, "help": "TFT attention heads"})
    hidden_continuous_size: int = field(default=8, metadata={"min": 1, "help": "TFT size of continuous-variable embeddings"})
    dropout: float = field(default=0.1, metadata={"min": 0, "below": 1, "help": "dropout"})


@dataclass
class TrainingConfig:
    epochs: int = field(default=4, metadata={"min": 0, "help": "training epochs"})
    batch_size: int = field(default=128, metadata={"min": 1, "help": "windows per batch"})
    max_batches: int = field(default=50, metadata={"min": 0, "help": "batches per epoch (random windows; 0 = all windows)"})
    lr: float = field(default=3e-3, metadata={"above": 0, "help": "Adam learning rate"})
    qlike_weight: float = field(default=0.1, metadata={"min": 0, "help": "add this times the QLIKE of the variance forecast E[rv^2] implied by the realised-vol quantiles to the pinball training loss (0 = pinball only, the default before session 4; 0.1 chosen on a pre-2002 validation backtest, domains/finance/HISTORY.md; model.qlike_loss)"})
    qlike_cap: float = field(default=0.0, metadata={"min": 0, "help": "c > 0: the QLIKE training terms continue linearly below log(forecast/realised variance) = -c, so a single row whose realised variance is far above its forecast cannot dominate a batch (model.qlike_of_log_ratio); 0 = plain QLIKE (the default: c = 5 was tried on the pre-2002 validation backtest in session 8: 0.9 percent lower QLIKE, below the 1 percent bar, not adopted)"})
    variance_head: float = field(default=0.3, metadata={"min": 0, "help": "W_v > 0: give the TFT a dedicated variance output (per horizon a log-multiplier of its own median realised vol, model.add_variance_head) trained with W_v x the QLIKE of its E[rv^2] against the realised vol; the backtest records it (rvol_var_head) and scores it by --variance-rule head. 0 = none (the default before session 6; runs saved without it still load). 0.3 chosen on a pre-2002 validation backtest (domains/finance/HISTORY.md)"})


@dataclass
class ThreadsConfig:
    threads: int = field(default=1, metadata={"min": 1, "help": "torch CPU threads (1 was the fastest for this small model on the busy shared 2-core machine, in ad-hoc timings)"})


@dataclass
class CalendarConfig:
    calendar: str = field(default=DEFAULT_CALENDAR, metadata={"help": "exchange calendar of the forecast dates: 'auto' = each ticker's exchange from its Yahoo/stooq suffix, Bloomberg exchange code or index symbol (7203.T -> XTKS, VOD.L -> XLON, SAP.DE -> XETR, ^FTSE -> XLON, 'VOD LN Equity' -> XLON, 'NKY Index' -> XTKS; domains/finance/calendars.py), else XNYS; or one exchange_calendars name for every ticker (XNYS, XLON, XETR, XTKS, ...); 'business' = Monday-Friday"})


@dataclass
class ZeroShotConfig:
    zero_shot: bool = field(default=False, metadata={"help": "also forecast tickers the model was not trained on: an 'unknown ticker' embedding and normalisers fitted on the series' own history"})


@dataclass
class GarchConfig:
    """The GARCH-informed TFT (``training.build_forecaster``), the same in train, backtest and transfer."""

    garch_informed: bool = field(default=True, metadata={"help": "GARCH-informed TFT: a GJR-GARCH-t per ticker, fitted on its returns up to the cutoff (in the backtest: the gjr_t baseline's own fit), gives an input (its one-step volatility) and the scale of the targets, so the TFT's quantiles are a correction of GJR's (--no-garch-informed: the plain TFT)"})


@dataclass
class TrainConfig(GarchConfig, TrainingConfig, ModelConfig, DataConfig, ThreadsConfig, TrackingConfig, SeedConfig, DeviceConfig, ResumeConfig, RunConfig):
    val_days: int = field(default=63, metadata={**HELD_OUT_DAYS, "min": 0, "help": "last trading days held out for validation (0 = train on everything)"})
    covariates: bool = field(default=True, metadata={"help": "read the bundled VIX/WTI covariates (--no-covariates: a model that can forecast any price file, which has none)"})


@dataclass
class BacktestConfig(GarchConfig, TrainingConfig, ModelConfig, DataConfig, ThreadsConfig, TrackingConfig, SeedConfig, RunConfig):
    # fields owned by finance-B (walk-forward backtest, issue 15); see domains/finance/walkforward.py
    folds: int = field(default=40, metadata={"min": 1, "help": "number of walk-forward folds (test blocks): the last folds x test_days trading days"})
    test_days: int = field(default=126, metadata={"min": 1, "help": "trading days per test block (126 = half a year, 63 = a quarter)"})
    epochs: int = field(default=8, metadata={"min": 0, "help": "training epochs of the first fold (from scratch; the best on validation is kept). 8 since session 8 (was 2), chosen on the pre-2002 validation backtest over 2 and 4 (domains/finance/HISTORY.md)"})
    refit_epochs: int = field(default=4, metadata={"min": 0, "help": "epochs of warm-started refit for folds after the first (the best on validation is kept, 0 included). 4 since session 8 (was 1), chosen with --epochs"})
    select_on: str = field(default="pinball", metadata={"choices": ["pinball", "loss"], "help": "what each member's early-stopping choice minimises on the validation days: pinball (the default) or loss = the training objective itself, in the model's own (GARCH-relative) units (pinball + the --qlike-weight and --variance-head QLIKE terms, model.evaluate_objective); tried on the pre-2002 validation backtest in session 11: +0.3 percent validation QLIKE, higher in both replicates, not adopted (domains/finance/HISTORY.md)"})
    refit_batches: int = field(default=4, metadata={"min": 0, "help": "batches per refit epoch (0 = --max-batches); sized for 40 folds x 3 seeds on 2 busy CPU cores"})
    seeds: int = field(default=3, metadata={"min": 1, "help": "ensemble members (TFTs with seeds seed, seed+1, ...); the model 'tft' averages their quantiles"})
    val_days: int = field(default=63, metadata={"min": 0, "help": "trading days before each cutoff held out to choose the early-stopping epoch"})
    fold_min_history: int = field(default=500, metadata={"min": 2, "help": "days of history up to a cutoff a ticker needs to take part in that fold"})
    stress_quantile: float = field(default=0.8, metadata={"min": 0, "below": 1, "help": "stress regime: market trailing vol above this quantile of its history up to the cutoff"})
    regime_window: int = field(default=63, metadata={"min": 2, "help": "trading days of the trailing market volatility that defines the regime"})
    baselines: list[str] = field(default_factory=lambda: list(BASELINES), metadata={"help": f"baselines to run: {', '.join(BASELINES)}"})
    baseline_window: int = field(default=2520, metadata={"min": 0, "help": "GARCH/GJR/HAR parameters are fitted on the last this many days before each cutoff (0 = all)"})
    end: str = field(default="", metadata={"help": "use only prices dated on or before this day (YYYY-MM-DD), e.g. a validation period before the default test span (its first cutoff is 2002-12-12); empty = all"})
    save_predictions: bool = field(default=True, metadata={"help": "write every quantile forecast to predictions.parquet"})
    rescore: str = field(default="", metadata={"help": "rescore a saved backtest run (name or folder) from its losses/predictions, no training: adds vol_qlike_mean (QLIKE on sqrt(E[rv^2]) from the quantiles) to every table and the verdict"})
    variance_rule: str = field(default=DEFAULT_RULE, metadata={"help": "variance point forecast scored by vol_qlike_cal, recalibrated at each cutoff on the model's own earlier forecasts (domains/finance/variance.py); loglinear_gjr: loglinear plus log of GJR-GARCH-t's own variance forecast as a regressor, i.e. a fitted COMBINATION with GJR (not the model alone; gjr_t itself keeps loglinear); head (the default since session 6): a TFT's variance-head forecast as it is (--variance-head), every other model loglinear; loglinear_head: the head recalibrated like loglinear", "choices": list(VARIANCE_RULES)})
    ensemble_variance: str = field(default=DEFAULT_ENSEMBLE_VARIANCE, metadata={"help": "the ensemble's variance forecast (vol_qlike_cal): members_geo = geometric mean of its members' recalibrated variance forecasts (chosen on the pre-2002 validation backtest); quantiles = the variance rule applied to the averaged quantiles", "choices": list(ENSEMBLE_VARIANCE)})
    quick: bool = field(default=False, metadata={"help": "demo/test setting: 4 quarterly folds (2022), SP500/AAPL/JPM, 2 seeds, 1 epoch of 20 batches then refits of 5 (backtest.QUICK)"})


@dataclass
class ForecastConfig(ZeroShotConfig, CalendarConfig, DataConfig, ThreadsConfig, ModelRunConfig, TrackingConfig, RunConfig):
    """Forecast from each ticker's latest date with a trained model run."""

    horizon: int = field(default=0, metadata={"min": 0, "help": "write the first N trading days of the forecast (0 = every day the model forecasts: "
                                                                "its training --horizon, 5 by default); more than the model's horizon is refused "
                                                                "(train a model with a longer --horizon)"})


@dataclass
class ScoreConfig(ScoringConfig, ZeroShotConfig, CalendarConfig, DataConfig, ModelRunConfig, TrackingConfig, RunConfig):
    """Batch forecasts of every ticker through ``core.scoring`` (one work item per ticker)."""


@dataclass
class TransferConfig(GarchConfig, TrainingConfig, ModelConfig, DataConfig, ThreadsConfig, TrackingConfig, SeedConfig, RunConfig):
    holdout: list[str] = field(default_factory=lambda: ["AAPL"], metadata={"help": "tickers left out of pre-training (each gets only --short-days of history)"})
    short_days: int = field(default=250, metadata={"min": 1, "help": "trading days of each held-out ticker's history before the cutoff"})
    test_days: int = field(default=126, metadata={"min": 1, "help": "trading days after the cutoff to evaluate on"})
    finetune_epochs: int = field(default=10, metadata={"min": 0, "help": "epochs on the short history (fine-tuning and from scratch)"})
    finetune_lr: float = field(default=1e-3, metadata={"above": 0, "help": "learning rate for full fine-tuning"})
    lora_lr: float = field(default=5e-3, metadata={"above": 0, "help": "learning rate for LoRA"})
    lora_r: int = field(default=4, metadata={"min": 1, "help": "LoRA rank"})
    save: str = field(default="auto", metadata={"help": "which variant the run saves as its model (forecast/score/dashboard can use it): auto = the one of "
                                              "zero_shot / finetune_full / finetune_lora with the lowest vol pinball on the last --val-days of the short "
                                              "history, each fine-tuned for that choice on the days before them only (the test days never choose)",
                                              "choices": ["auto", "zero_shot", "finetune_full", "finetune_lora"]})
    val_days: int = field(default=50, metadata={"min": 0, "help": "--save auto: trading days at the end of each held-out ticker's short history that choose the saved variant (a shorter history: its last third, logged)"})

    def __post_init__(self) -> None:
        super().__post_init__()
        if isinstance(self.holdout, str):
            self.holdout = [self.holdout]
        self.holdout = list(dict.fromkeys(self.holdout))  # --holdout AAPL AAPL: one held-out ticker, not two result rows


@dataclass
class InterpretConfig(DataConfig, ModelRunConfig, TrackingConfig, RunConfig):
    # (0 or -3 picked (nearly) every origin of the history: [-0], [-(-3)])
    last_days: int = field(default=63, metadata={"min": 1, "help": "interpret forecasts from origins in the last N trading days of the data"})


def spec_from_config(cfg, observed_reals: list[str] | tuple[str, ...] | None = None) -> TFTSpec:
    """The TFTSpec fields a config exposes (the rest keep TFTSpec's defaults); ``observed_reals``:
    the inputs the training data supports (``features.observed_inputs(feat)``)."""
    spec = TFTSpec(**{f.name: getattr(cfg, f.name) for f in fields(TFTSpec) if hasattr(cfg, f.name)})
    spec.variance_head = bool(getattr(cfg, "variance_head", 0))  # the config holds its loss weight W_v, the spec only whether it exists
    if observed_reals is not None:
        spec.observed_reals = tuple(observed_reals)
    return spec
