"""PEARL (Liew, Takahashi, Ueno, ICLR 2022): one private sketch, then a generator trained freely.

The data flow is one way::

    private table / array --(public schema: encode into [0,1]^D)--> privacy/sketch.py
        --(Gaussian mechanism, once)--> NoisySketch --> train_generator --> sample --> decode

* ``PearlMethod.prepare`` loads and validates the private data and plans the budget, before the
  run directory exists.
* ``PearlMethod.run`` derives what the user did not declare of the schema with DP (kinds,
  bounds, categories), releases the counts and the characteristic-function sketch (each release
  one ledger event with its own noise, drawn through ``Ledger.release`` into its own file), then
  *drops every reference to the private data* and trains the generator with
  ``train_generator(sketch, layout, ...)``, a function that receives only the release and public
  facts.
* The generator is trained to minimise the characteristic-function distance (CFD) to the noisy
  sketch while a critic re-weights the frequencies to where the two differ most (the paper's
  adversarial re-weighting, Sec. 3.3): the critic is a Gaussian frequency distribution
  omega_a(t | h) = N(0, diag(e^{2a}) / h^2) relative to the public draw omega_0(t | h) = N(0, I / h^2);
  because the frequencies are fixed by the release, omega_a acts through importance weights
  w_j = omega_a(t_j) / omega_0(t_j) (self-normalised), and min_G max_a sum_j w_j |Phi_data(t_j) -
  Phi_G(t_j)|^2 is the objective.  Two stabilisers (docs/pearl.md): |a_d| <= max_log_scale, and
  the weights are mixed with uniform ones (uniform_mix).

The modules, in the order of the data flow:

* ``schema``: the column model, the declared ``pearl.data_schema`` and the DP derivation of the rest;
* ``privacy/private_tables.py`` (outside this package, like every reader of private records): reading
  the private table or array into a ``PrivateRecords`` handle, never printed;
* ``encoding``: records <-> [0, 1]^D (public transforms) and the owner's console notes;
* ``generator``: the generator and ``train_generator`` (sees only the release);
* ``method``: ``PearlMethod`` (prepare, releases through the ledger, resume, training, output);
* ``report``: privacy.json.

The benchmark's helpers (the epsilon = inf reference and the text-embedding sketch) live in
``bench/pearl_tools.py``.
"""

from dpsynth.methods.pearl.encoding import MISSING_NUMERIC, ONEHOT_SCALE, Layout, decode, encode_table, value_notes
from dpsynth.methods.pearl.generator import TrainedGenerator, TrainSettings, train_generator
from dpsynth.methods.pearl.method import PearlMethod, default_bandwidth
from dpsynth.methods.pearl.report import ADJACENCY, RELEASE_FILES, mechanism_name
from dpsynth.methods.pearl.schema import ColumnSpec, Schema, load_schema_spec
from dpsynth.privacy.private_tables import (
    DOMAIN_FINITE_ARRAY,
    DOMAIN_LABEL,
    DOMAIN_NOT_EMPTY,
    DOMAIN_SAME_KEYS,
    PrivateRecords,
)

__all__ = [
    "ADJACENCY",
    "DOMAIN_FINITE_ARRAY",
    "DOMAIN_LABEL",
    "DOMAIN_NOT_EMPTY",
    "DOMAIN_SAME_KEYS",
    "MISSING_NUMERIC",
    "ONEHOT_SCALE",
    "RELEASE_FILES",
    "ColumnSpec",
    "Layout",
    "PearlMethod",
    "PrivateRecords",
    "Schema",
    "TrainSettings",
    "TrainedGenerator",
    "decode",
    "default_bandwidth",
    "encode_table",
    "load_schema_spec",
    "mechanism_name",
    "train_generator",
    "value_notes",
]
