"""Every feature key of the project, in one place (spec/DATA.md §2).

The sample builder writes these keys, `preprocessing_fn` reads them, the models name
their inputs after them, and the export, the serving client and the tests import them.
Nothing else in the project spells a feature name as a string literal.
"""

from __future__ import annotations

# --- raw-log files (DATA.md §1) -------------------------------------------------
ITEMS_FILE = "items.csv"
EMBEDDINGS_FILE = "item_embeddings.parquet"
USERS_FILE = "users.csv"
BEHAVIORS_FILE = "behaviors.csv"
IMPRESSIONS_FILE = "impressions.csv"
TRUTH_FILE = "truth.csv"
# what a converter (daian convert) did: its settings, counts and drops; not read back
CONVERSION_REPORT_FILE = "conversion.json"

ITEMS_REQUIRED = ("item_id", "category_id")
ITEMS_OPTIONAL = ("brand_id", "shop_id", "price", "title")
EMBEDDINGS_COLUMNS = ("item_id", "embedding")
USERS_REQUIRED = ("user_id",)
BEHAVIORS_REQUIRED = ("user_id", "item_id", "timestamp")
BEHAVIORS_OPTIONAL = ("behavior",)
IMPRESSIONS_REQUIRED = (
    "request_id", "user_id", "timestamp", "trigger_item_id", "item_id", "clicked",
)
IMPRESSIONS_OPTIONAL = ("position",)
TRUTH_REQUIRED = ("request_id", "item_id", "p_click")

BEHAVIOR_TYPES = ("click", "cart", "fav", "buy")
DEFAULT_BEHAVIOR = "click"

# --- training examples (DATA.md §2) ---------------------------------------------
MAX_SEQ_LEN = 50

REQUEST_ID = "request_id"
USER_ID = "user_id"
TIMESTAMP = "timestamp"
USER_PREFIX = "user_"  # user profile columns become user_<col>

# Item-side columns copied for trigger, target and history (bytes unless noted).
ITEM_SIDE = ("item_id", "category_id", "brand_id", "shop_id")
HIST_SIDE = ("item_id", "category_id", "brand_id")

TRIGGER_ITEM_ID = "trigger_item_id"
TRIGGER_CATEGORY_ID = "trigger_category_id"
TRIGGER_BRAND_ID = "trigger_brand_id"
TRIGGER_SHOP_ID = "trigger_shop_id"
TRIGGER_PRICE = "trigger_price"

TARGET_ITEM_ID = "target_item_id"
TARGET_CATEGORY_ID = "target_category_id"
TARGET_BRAND_ID = "target_brand_id"
TARGET_SHOP_ID = "target_shop_id"
TARGET_PRICE = "target_price"

HIST_ITEM_ID = "hist_item_id"
HIST_CATEGORY_ID = "hist_category_id"
HIST_BRAND_ID = "hist_brand_id"
HIST_BEHAVIOR = "hist_behavior"
HIST_TIME_DELTA = "hist_time_delta"

LABEL = "label"
INTENT_LABEL = "intent_label"
INTENT_MASK = "intent_mask"
INTENT_LABEL_LOO = "intent_label_loo"
INTENT_MASK_LOO = "intent_mask_loo"
TARGET_SIM = "target_sim"
INTENT_DIVERSITY = "intent_diversity"
P_TRUE = "p_true"
POSITION = "position"  # kept for analysis of position bias; never a model input

TRIGGER_ITEM_KEYS = (TRIGGER_ITEM_ID, TRIGGER_CATEGORY_ID, TRIGGER_BRAND_ID,
                     TRIGGER_SHOP_ID)
TARGET_ITEM_KEYS = (TARGET_ITEM_ID, TARGET_CATEGORY_ID, TARGET_BRAND_ID,
                    TARGET_SHOP_ID)
# a candidate's own raw features (what `rank` reads of each candidate)
TARGET_KEYS = TARGET_ITEM_KEYS + (TARGET_PRICE,)
HIST_ITEM_KEYS = (HIST_ITEM_ID, HIST_CATEGORY_ID, HIST_BRAND_ID)
HIST_KEYS = HIST_ITEM_KEYS + (HIST_BEHAVIOR, HIST_TIME_DELTA)
# Derived by Transform from `hist_time_delta` (not an example key): the fixed log-scale
# bucket of each step's age, `xf(HIST_TIME_BUCKET)` int64 `(B, max_seq_len)`; 0 is
# padding, bucket b >= 1 holds deltas in [2^(b-1), 2^b) seconds (b = 1 also holds
# deltas <= 1), the last bucket everything from 2^(TIME_BUCKETS-2) s (~48 days) on.
# Read by DUPN (models/dupn.py); a table of TIME_BUCKETS rows embeds it.
HIST_TIME_BUCKET = "hist_time_bucket"
TIME_BUCKETS = 24

# Shared vocabularies: one item vocabulary for trigger, target and history, and
# likewise for categories, brands and shops (DAIAN.md §1; PITFALLS "Sequences").
SHARED_VOCABS = {
    "item": (TRIGGER_ITEM_ID, TARGET_ITEM_ID, HIST_ITEM_ID),
    "category": (TRIGGER_CATEGORY_ID, TARGET_CATEGORY_ID, HIST_CATEGORY_ID),
    "brand": (TRIGGER_BRAND_ID, TARGET_BRAND_ID, HIST_BRAND_ID),
    "shop": (TRIGGER_SHOP_ID, TARGET_SHOP_ID),
    "behavior": (HIST_BEHAVIOR,),
}
PRICE_KEYS = (TRIGGER_PRICE, TARGET_PRICE)

# The DIN attention pairs: each target key attends over its history key.
DIN_PAIRS = (
    (TARGET_ITEM_ID, HIST_ITEM_ID),
    (TARGET_CATEGORY_ID, HIST_CATEGORY_ID),
    (TARGET_BRAND_ID, HIST_BRAND_ID),
)

# --- vocabularies (Transform's names; the models' embedding tables follow them) -------
USER_ID_VOCAB = "user_id"  # vocabulary name of the user id
PRICE_VOCAB = "price"  # the embedding table of the shared price buckets (not a vocabulary)
NUM_RESERVED_IDS = 2  # padding (0) and the out-of-vocabulary id (V + 1)


def user_profile_vocab(column: str) -> str:
    """Vocabulary name of user profile column `column`."""
    return user_feature(column)


def vocab_filename(name: str) -> str:
    """The tft vocabulary file name of vocabulary `name`."""
    return f"vocab_{name}"


def vocab_names(user_columns) -> tuple:
    """All vocabulary names: the shared groups, the user id, the profile columns."""
    return (tuple(SHARED_VOCABS) + (USER_ID_VOCAB,)
            + tuple(user_profile_vocab(c) for c in user_columns))


# Keys that must never reach a model: labels and analysis-only columns.
LABEL_KEYS = (LABEL, INTENT_LABEL, INTENT_MASK, INTENT_LABEL_LOO, INTENT_MASK_LOO)
ANALYSIS_KEYS = (INTENT_DIVERSITY, P_TRUE, POSITION, REQUEST_ID, TIMESTAMP)

# --- transformed names ------------------------------------------------------------
XF_SUFFIX = "_xf"
PADDING_ID = 0  # id 0 is padding in every vocabulary; OOV ids follow the vocabulary
USER_KEY = "user_key"  # raw user id passed through Transform, for GAUC only
PRICE_BUCKETS = 10


def xf(key: str) -> str:
    """The transformed feature name of raw key `key`."""
    return key + XF_SUFFIX


def user_feature(column: str) -> str:
    """Example key of user-profile column `column` of users.csv."""
    return USER_PREFIX + column


SIM_BIN = xf(TARGET_SIM)  # bin index of target_sim over [lo, hi]
REQUEST_KEY = "request_key"  # raw request id passed through Transform (I-11 weights)
RAW_SUFFIX = "_raw"


def raw(key: str) -> str:
    """The name of raw feature `key` passed through Transform unchanged (ids as bytes,
    history lists padded with b"" to dense `(B, max_seq_len)`)."""
    return key + RAW_SUFFIX


# Raw item ids the models read to look up the frozen multimodal catalog table, which is
# keyed by item id (DATA.md §2), so a cold item still finds its vector.
CATALOG_KEYS = (TRIGGER_ITEM_ID, TARGET_ITEM_ID, HIST_ITEM_ID)
# Passed-through columns that are never model inputs (evaluation, I-2, I-11).
PASSTHROUGH_KEYS = (USER_KEY, REQUEST_KEY, raw(INTENT_DIVERSITY), raw(P_TRUE))
