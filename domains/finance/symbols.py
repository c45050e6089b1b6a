"""Yahoo's symbols of markets that are not one exchange's shares: crypto pairs, currency pairs, futures.

    from domains.finance.symbols import symbol_market
    symbol_market("BTC-USD")    # 'crypto pair'   (traded every day: calendars.py gives it '24/7')
    symbol_market("EURUSD=X")   # 'currency pair' (Monday-Friday around the clock: '24/5')
    symbol_market("CL=F")       # 'futures'       (CME Globex's holidays: 'us_futures')
    symbol_market("BRK-B")      # None            (a share class, not a pair)

One definition read by both places that care: ``calendars.py`` (each market's calendar) and ``data.py`` (crypto and
currency pairs have no quote in a hundredth of their unit, so a lasting x100 jump in one is a real move, not pence next
to pounds; futures can be quoted in cents, so theirs is rescaled as a share's). Imports nothing from the package, so either module can import it.
"""

from __future__ import annotations

import re

__all__ = ["CRYPTO_PAIR", "CURRENCY_PAIR", "FUTURES", "MARKET_SYMBOLS", "symbol_market"]

CRYPTO_PAIR = re.compile(r"^[A-Z0-9]{2,10}-(?:USD|USDT|USDC|EUR|GBP|JPY|BTC|ETH)$")  # BTC-USD, LUNA1-USD, ETH-BTC
CURRENCY_PAIR = re.compile(r"=X$")  # EURUSD=X, JPY=X
FUTURES = re.compile(r"=F$")  # CL=F, ES=F
MARKET_SYMBOLS = (("crypto pair", CRYPTO_PAIR), ("currency pair", CURRENCY_PAIR), ("futures", FUTURES))


def symbol_market(ticker) -> str | None:
    """Which of :data:`MARKET_SYMBOLS` ``ticker`` names (``'crypto pair'``, ``'currency pair'``, ``'futures'``; any case
    and spacing), else None."""
    name = " ".join(str(ticker).upper().split())
    for market, pattern in MARKET_SYMBOLS:
        if pattern.search(name):
            return market
    return None
