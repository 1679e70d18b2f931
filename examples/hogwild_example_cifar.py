"""HOGWILD on one machine: N processes train one CNN on CIFAR-10 lock-free (seed example).

One worker process per core shares one copy of the weights in shared memory and updates it
without locks; the script then compares the result with the
same model trained by a single process (``--executor serial`` runs only that one).
CIFAR-10 is read from $RAYNN_DATA (default ./data) when it is there (or with --download);
otherwise CIFAR-shaped synthetic data stands in, and the script says so.
Expected test accuracy: about 0.60 on CIFAR-10 for the full run (50,000 images, 10 epochs),
HOGWILD within 0.02 of the single process; on the synthetic data
``--subset 600 --epochs 1 --batch-size 16`` reaches 1.00 (seeds 0-2).

    python examples/hogwild_example_cifar.py [--subset N] [--epochs E] [--executor serial]
"""

from common import cifar10, options, subset
from torch import nn
from torch.optim import SGD
from torch.utils.data import DataLoader
from torchvision.transforms import ToTensor

from raynn.compat import DistributedTester, DistributedTrainer


class ConvNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(32 * 8 * 8, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def get_optimizer(model):
    return SGD(model.parameters(), lr=0.01, momentum=0.9)


def get_criterion():
    return nn.CrossEntropyLoss()


def train_and_test(executor, processes, args, train_dataset, test_loader):
    model = ConvNet()
    trainer = DistributedTrainer(processes, get_criterion(), args.root_dir, args.batch_size)
    trainer(model, train_dataset, get_optimizer(model), epochs=args.epochs, executor=executor)
    return DistributedTester(test_loader, args.root_dir)(model)["accuracy"]


if __name__ == "__main__":
    args = options(__doc__, epochs=10, batch_size=32)
    train_dataset = subset(cifar10(True, ToTensor(), args.download), args.subset)
    test_loader = DataLoader(subset(cifar10(False, ToTensor()), args.subset), batch_size=256)
    if args.executor != "serial":
        hogwild = train_and_test(args.executor, "auto", args, train_dataset, test_loader)
        print(f"HOGWILD test accuracy: {hogwild:.4f}")
    single = train_and_test("serial", 1, args, train_dataset, test_loader)
    print(f"single-process test accuracy: {single:.4f}")
