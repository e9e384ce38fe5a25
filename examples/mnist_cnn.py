"""Train a small CNN on MNIST: the whole loop in plain sight.

    python examples/mnist_cnn.py --epochs 1 --limit-batches 100 --data-dir ../shared/data/mnist

Reads MNIST from --data-dir, else $TINYGRAD_CONV_DATA, else ~/.cache/tinygrad_conv/mnist
(downloading it there when missing).
The same training, with checkpoints and resume, is `tinygrad-conv train`.

On N processes (pip install 'tinygrad_conv[mpi]'), each training on 64 / N images of every
batch of 64, with the gradients averaged (docs/distributed.md):

    mpiexec -n 2 python examples/mnist_cnn.py --epochs 1
"""

import argparse
import time

import tinygrad_conv as tc
import tinygrad_conv.distributed as dist
import tinygrad_conv.functional as F
from tinygrad_conv import nn, optim
from tinygrad_conv.data import MNIST, DataLoader, DistributedSampler

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--epochs", type=int, default=1, help="passes over the training set")
parser.add_argument("--limit-batches", type=int, default=None, help="stop each epoch early")
parser.add_argument("--data-dir", default=None, help="folder with the four MNIST files")
args = parser.parse_args()

distributed = (dist.launched_by_mpiexec() or (0, 1))[1] > 1  # started by mpiexec -n N
if distributed:
    dist.init_process_group("mpi")
rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)

tc.manual_seed(0)
train_set = MNIST(args.data_dir, train=True)
sampler = DistributedSampler(train_set, seed=0) if distributed else None  # this rank's share
train_loader = DataLoader(train_set, batch_size=64 // world, shuffle=not distributed,
                          sampler=sampler)
test_loader = DataLoader(MNIST(args.data_dir, train=False), batch_size=500)

model = nn.Sequential(
    nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # (N, 32, 14, 14)
    nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 64, 7, 7)
    nn.Flatten(),                                                 # (N, 3136)
    nn.Linear(64 * 7 * 7, 128), nn.ReLU(),
    nn.Linear(128, 10),                                           # (N, 10) logits
)
if distributed:  # rank 0's weights everywhere; gradients averaged over the ranks in backward
    model = nn.parallel.DistributedDataParallel(model)
optimizer = optim.Adam(model.parameters(), lr=1e-3)

for epoch in range(1, args.epochs + 1):
    start = time.perf_counter()
    if sampler is not None:
        sampler.set_epoch(epoch)  # a new order each epoch, the same on every rank
    model.train()
    for step, (x, y) in enumerate(train_loader, start=1):
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if step % 100 == 0 and rank == 0:
            print(f"epoch {epoch} step {step}/{len(train_loader)}: loss {loss.item():.4f}")
        if step == args.limit_batches:
            break

    if rank != 0:  # rank 0 evaluates and prints; the others go on to the next epoch
        continue
    model.eval()
    correct = 0
    with tc.no_grad():
        for x, y in test_loader:
            correct += int((model(x).argmax(axis=1).numpy() == y.numpy()).sum())
    accuracy = correct / len(test_loader.dataset)
    print(f"epoch {epoch}: test accuracy {accuracy:.2%} ({time.perf_counter() - start:.0f} s)")
