"""Every line of dpsynth that reads private records lives here (``tests/test_privacy_boundary.py``).

- ``private_data``: the text methods' private-data handle (load, validate, embed, encode; never printed).
- ``private_tables``: PEARL's private tables and arrays, behind the same kind of handle.
- ``voting``: the Top-Q near/far vote and its declared L2 sensitivity.
- ``mechanisms``: Gaussian noise from a secure RNG.
- ``accountant``: sigma <-> epsilon with dp-accounting's PLD (GDP cross-check).
- ``ledger``: the persisted spend that a resumed run continues.
- ``sketch``: PEARL's releases (counts, schema facts, the characteristic-function sketch).
- ``dpsgd``: the DP-SGD plan and its accountants.
- ``report``: privacy.json.
"""
