# The adversarial family's network and attacks in PyTorch, as an independent check of
# what kiln measures: a 64-128-128-10 ReLU MLP on the UCI digits scaled to [0, 1]
# (1437 to train, the rest to test), SGD with momentum for 30 epochs, then FGSM and
# 100-step PGD at eps = 0.1 (L-inf, clipped to [0, 1]). Five seeds (splits and
# initialisations). Run with the peers' environment (../shared/bench/run.sh makes it):
#
#   ~/.cache/kiln-bench-venv/bin/python examples/canon/peers/adversarial.py
import gzip, pathlib, numpy as np, torch, torch.nn as nn
data = pathlib.Path(__file__).resolve().parents[2] / 'data' / 'digits.csv.gz'
rows = np.loadtxt(gzip.open(data), delimiter=',')
X = torch.tensor(rows[:, :64] / 16.0, dtype=torch.float32); Y = torch.tensor(rows[:, 64], dtype=torch.long)
def run(seed):
    g = torch.Generator().manual_seed(seed); perm = torch.randperm(len(X), generator=g)
    tr, te = perm[:1437], perm[1437:]
    torch.manual_seed(seed)
    m = nn.Sequential(nn.Linear(64,128), nn.ReLU(), nn.Linear(128,128), nn.ReLU(), nn.Linear(128,10))
    opt = torch.optim.SGD(m.parameters(), lr=0.05, momentum=0.9)
    for ep in range(30):
        p = tr[torch.randperm(len(tr), generator=g)]
        for i in range(0, len(p) - 31, 32):
            b = p[i:i+32]; opt.zero_grad(); nn.functional.cross_entropy(m(X[b]), Y[b]).backward(); opt.step()
    x, y = X[te], Y[te]
    def acc(z): return (m(z).argmax(1) == y).float().mean().item()
    def grad(z):
        z = z.clone().requires_grad_(True); nn.functional.cross_entropy(m(z), y, reduction='sum').backward(); return z.grad
    eps = 0.1
    fgsm = (x + eps * grad(x).sign()).clamp(0, 1)
    a = x.clone()
    for _ in range(100):
        a = torch.min(torch.max(a + 0.005 * grad(a).sign(), x - eps), x + eps).clamp(0, 1)
    return acc(x), acc(fgsm), acc(a)
for s in range(5):
    c, f, p = run(s); print(f"seed {s}: clean {c:.4f} FGSM {f:.4f} PGD-100 {p:.4f} half {c/2:.4f}")
