"""Symbols of markets that are not one exchange's shares: crypto pairs, currency pairs, futures.

    from domains.finance.symbols import symbol_market
    symbol_market("BTC-USD")          # 'crypto pair'   (traded every day: calendars.py gives it '24/7')
    symbol_market("EURUSD=X")         # 'currency pair' (Monday-Friday around the clock: '24/5')
    symbol_market("CL=F")             # 'futures'       (CME Globex's holidays: 'us_futures')
    symbol_market("BRK-B")            # None            (a share class, not a pair)

The spellings read, by source (any case and spacing):

* Yahoo: ``BTC-USD``, ``ETH-BTC`` (crypto), ``EURUSD=X``, ``JPY=X`` (currency), ``CL=F`` (futures).
* ccxt's unified symbols ``BASE/QUOTE`` (``BTC/USDT``, ``ETH/BTC``; a derivative's settle currency ``BTC/USDT:USDT``),
  Gate.io's ``BTC_USDT``, and Binance's ids, base and quote written together (``BTCUSDT``, ``LUNAUSDT``: a stablecoin
  quote, :data:`STABLECOIN_QUOTES`); Bitstamp's and Kraken's ``BTCUSD`` / ``XBTUSD`` (bitcoin or ether, :data:`FIAT_CRYPTO`,
  next to a currency code). Sources: ccxt's manual (unified ``BASE/QUOTE``) and the ccxt_client docs' exchange formats
  (hexdocs.pm/ccxt_client, ``CCXT.Symbol``: Binance ``BTCUSDT``, Coinbase ``BTC-USD``, Gate.io ``BTC_USDT``, Bitstamp
  ``btcusd``, Kraken ``XBT``).
* Currency pairs written as two ISO 4217 codes (:data:`ISO_CURRENCIES`): ``EURUSD`` (a file named EURUSD.csv),
  ``EUR/USD``, ``EUR_USD``, ``EUR-USD``; Bloomberg's currency yellow key ``Curncy`` on a pair or on one code
  (``EURUSD Curncy``, ``JPY Curncy`` = USD/JPY; with a pricing source, ``EURUSD BGN Curncy``) and its bitcoin code XBT
  (``XBTUSD Curncy``: a crypto pair). Only pairs of ISO codes are read this way: a share ticker has no such name (US
  tickers are at most five letters; ``XXXUSD`` is no pair, XXX being ISO's "no currency").

A separated pair (``-``, ``/``, ``_``) of two ISO codes is a currency pair; of anything else (a token, 2-10 letters or
digits) and a quote of :data:`CRYPTO_QUOTES` a crypto pair; a share class (``BRK-B``, ``BRK/B``) is neither. Bloomberg's
other ``Curncy`` names (FX futures such as ``ECA Curncy``, forwards) are not read here.

One definition read by both places that care: ``calendars.py`` (each market's calendar) and ``data.py`` (crypto and
currency pairs have no quote in a hundredth of their unit, :data:`NO_SUBUNIT_MARKETS`, so a lasting x100 jump in one is a
real move, not pence next to pounds; futures can be quoted in cents, so theirs is rescaled as a share's). Imports nothing from the package, so either module can import it.
"""

from __future__ import annotations

import re

__all__ = ["ISO_CURRENCIES", "CRYPTO_QUOTES", "STABLECOIN_QUOTES", "FIAT_CRYPTO", "CRYPTO_PAIR", "CURRENCY_PAIR", "FUTURES",
           "MARKET_SYMBOLS", "NO_SUBUNIT_MARKETS", "symbol_market"]

# ISO 4217's active currency codes (List One), the four precious metals it lists (XAU, XAG, XPT, XPD: quoted as currency
# pairs, XAUUSD=X), the offshore yuan CNH that FX markets quote beside them (USDCNH), and HRK and ANG (retired 2023 and
# 2025: still in histories). Not its funds, SDR or test codes (XDR, XTS, XXX, ...).
ISO_CURRENCIES = frozenset("""
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNH
    CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HRK HTG HUF IDR
    ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP
    MRU MUR MVR MWK MXN MYR MZN NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG
    SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST
    XAF XAG XAU XCD XCG XOF XPD XPF XPT YER ZAR ZMW ZWG
""".split())
CRYPTO_QUOTES = ("USD", "USDT", "USDC", "BUSD", "FDUSD", "EUR", "GBP", "JPY", "BTC", "ETH")  # after a separator: BTC-USD, ETH/BTC
STABLECOIN_QUOTES = ("USDT", "USDC", "BUSD", "FDUSD")  # written next to the base, Binance's ids: BTCUSDT, LUNAUSDT
FIAT_CRYPTO = ("BTC", "XBT", "ETH")  # written next to a currency code: BTCUSD (Bitstamp), XBTUSD (Kraken, Bloomberg)

_ISO = "(?:" + "|".join(sorted(ISO_CURRENCIES)) + ")"
_CURNCY = r"(?:\s[A-Z]{3,4})?\sCURNCY"  # Bloomberg's yellow key, after an optional pricing source (BGN, CMPN)
CURRENCY_PAIR = re.compile(
    r"=X$"                                               # EURUSD=X, JPY=X (Yahoo)
    rf"|^(?P<base>{_ISO})[-/_]?(?!(?P=base)\b){_ISO}$"    # EURUSD, EUR/USD, EUR_USD, EUR-USD: two different ISO codes
    rf"|^{_ISO}(?:{_ISO})?{_CURNCY}$")                    # EURUSD Curncy, JPY Curncy (Bloomberg)
CRYPTO_PAIR = re.compile(
    rf"^[A-Z0-9]{{2,10}}[-/_](?:{'|'.join(CRYPTO_QUOTES)})(?::[A-Z0-9]+)?$"  # BTC-USD, LUNA1-USD, BTC/USDT, BTC_USDT, BTC/USDT:USDT
    rf"|^[A-Z0-9]{{2,10}}(?:{'|'.join(STABLECOIN_QUOTES)})$"               # BTCUSDT, LUNAUSDT (Binance)
    rf"|^(?:{'|'.join(FIAT_CRYPTO)}){_ISO}(?:{_CURNCY})?$")                # BTCUSD, XBTUSD, XBTUSD Curncy
FUTURES = re.compile(r"=F$")  # CL=F, ES=F
# the currency pattern first: EUR-USD is a currency pair, though its dash spelling is also a crypto pair's
MARKET_SYMBOLS = (("currency pair", CURRENCY_PAIR), ("crypto pair", CRYPTO_PAIR), ("futures", FUTURES))
# the markets quoted in no hundredth of their unit (no pence of a BTC-USD or a EURUSD=X): a lasting x100 jump in one is a
# real move (data.py keeps it, price_jump). Futures can be quoted in cents (grains, ZC=F), so theirs is rescaled as a share's
NO_SUBUNIT_MARKETS = ("crypto pair", "currency pair")


def symbol_market(ticker) -> str | None:
    """Which of :data:`MARKET_SYMBOLS` ``ticker`` names (``'crypto pair'``, ``'currency pair'``, ``'futures'``; any case
    and spacing), else None."""
    name = " ".join(str(ticker).upper().split())
    for market, pattern in MARKET_SYMBOLS:
        if pattern.search(name):
            return market
    return None
