"""Distributed HOGWILD training of a LeNet on CIFAR-10 (the seed's example), then a test.

One pinned worker process per core of every node: this machine, or a Ray cluster's nodes
with ``--address HOST:PORT``. CIFAR-10 is read from $RAYNN_DATA (default ./data) when it is
there (or with --download); otherwise CIFAR-shaped synthetic data stands in, and the script
says so. Expected test accuracy: about 0.60 on CIFAR-10 for the full run (50,000 images,
20 epochs); on the synthetic data ``--subset 600 --epochs 1 --batch-size 16`` reaches
0.92 with the default ``--seed 0`` (0.90-0.99 over seeds 0-3).

    python examples/distributed_example_cifar.py [--subset N] [--epochs E] [--executor serial]
"""

from common import cifar10, options, subset
from torch import nn
from torch.optim import Adam
from torch.optim.lr_scheduler import MultiStepLR
from torch.utils.data import DataLoader
from torchvision.transforms import Compose, Normalize, ToTensor

from raynn.compat import DistributedTester, DistributedTrainer

TRANSFORM = Compose([ToTensor(), Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


def get_datasets(args):
    train_dataset = cifar10(True, TRANSFORM, args.download)
    test_dataset = cifar10(False, TRANSFORM)
    return subset(train_dataset, args.subset), subset(test_dataset, args.subset)


def get_model():
    return LeNet()


def get_optimizer(model):
    return Adam(model.parameters(), 1e-3)


def get_scheduler(optimizer):
    return MultiStepLR(optimizer, milestones=[10, 15], gamma=0.1)


def get_criterion():
    return nn.CrossEntropyLoss()


if __name__ == "__main__":
    args = options(__doc__, epochs=20, batch_size=32, address=True)
    train_dataset, test_dataset = get_datasets(args)
    model = get_model()
    optimizer = get_optimizer(model)
    trainer = DistributedTrainer("auto", get_criterion(), args.root_dir, args.batch_size)
    trainer(model, train_dataset, optimizer, get_scheduler(optimizer), epochs=args.epochs,
            executor=args.executor, address=args.address)  # fmt: skip
    tester = DistributedTester(DataLoader(test_dataset, batch_size=256), args.root_dir)
    print(f"test accuracy: {tester(model)['accuracy']:.4f}")
