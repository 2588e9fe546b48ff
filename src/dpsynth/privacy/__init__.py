"""Every line of dpsynth that reads private data (for the prompting methods) lives here.

- ``voting``: the Top-Q near/far vote and its declared L2 sensitivity.
- ``mechanisms``: Gaussian noise from a secure RNG.
- ``accountant``: sigma <-> epsilon with dp-accounting's PLD (GDP cross-check).
- ``ledger``: the persisted spend that a resumed run continues.
- ``report``: privacy.json.
"""
