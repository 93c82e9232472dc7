"""Why DIAN falls below DIN on the default world: the spread of its gate p, and the eval AUC of each
tower alone (seed 0, the experiment's data)."""
import dataclasses, glob, json, sys
import numpy as np
import tensorflow_transform as tft
from sklearn.metrics import roc_auc_score
from daian_tf.core.config import load_config
from daian_tf.training.fit import fit_model
from daian_tf.models.dian import parts_model
from daian_tf.data.dataset import make_dataset

cfg = load_config()
cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, name="dian"))
root = sys.argv[1] if len(sys.argv) > 1 else "runs/exp-models/data_n6"
tfo = tft.TFTransformOutput(f"{root}/transform_output")
train = f"{root}/transformed/train/*"; ev = f"{root}/transformed/eval/*"
print(glob.glob(train)[:1], glob.glob(ev)[:1])
model, hist = fit_model(cfg, tfo, train, ev, verbose=0)
print("val_auc per epoch", [round(x, 4) for x in hist["val_auc"]])
parts = parts_model(model)
keys = [t.name for t in model.inputs]
ds = make_dataset(ev, tfo, 4096, shuffle=False, input_keys=keys)
P, TAN, TFN, Y, L = [], [], [], [], []
for x, y in ds:
    p, a, b, out = parts(x, training=False)
    P.append(np.asarray(p).ravel()); TAN.append(np.asarray(a).ravel())
    TFN.append(np.asarray(b).ravel()); Y.append(np.asarray(out).ravel()); L.append(np.asarray(y).ravel())
P, TAN, TFN, Y, L = map(np.concatenate, (P, TAN, TFN, Y, L))
print(json.dumps({"p_mean": float(P.mean()), "p_std": float(P.std()),
                  "p_quantiles": [float(q) for q in np.quantile(P, [0.01, 0.5, 0.99])],
                  "auc_tan": roc_auc_score(L, TAN), "auc_tfn": roc_auc_score(L, TFN),
                  "auc_mix": roc_auc_score(L, Y)}, indent=1))
