"""Asynchronous K-fold cross-validation of two models x two schedulers on CIFAR-10 (seed example).

CIFAR-10 is read from $RAYNN_DATA (default ./data) when it is there (or with --download);
otherwise CIFAR-shaped synthetic data stands in, and the script says so.
Expected validation accuracy of the best model: about 0.65 on CIFAR-10 for the full run
(2 folds of 50,000 images, 10 epochs; the seed reported 0.54 to 0.80 for its models); on
the synthetic data ``--subset 1000 --epochs 1 --batch-size 16`` reaches about 0.9.

    python examples/kfold_example_cifar.py [--subset N] [--epochs E] [--executor serial]
"""

from common import cifar10, options, subset
from torch import nn
from torch.optim import Adam
from torchvision.transforms import Compose, Normalize, ToTensor

from raynn.compat import AsyncKFold


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


class SmallVGG(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(64 * 8 * 8, 10),
        )  # fmt: skip

    def forward(self, x):
        return self.net(x)


def get_optimizer(model):
    return Adam(model.parameters(), 1e-3)


def get_models():
    return [LeNet, SmallVGG]


def get_schedulers():
    return ["cosine", "warm"]


def get_dataset(args):
    transform = Compose([ToTensor(), Normalize((0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261))])
    return subset(cifar10(True, transform, args.download), args.subset)


def get_criterion():
    return nn.CrossEntropyLoss()


def get_trainer_params():
    return {"epochs": 10, "save_checkpoint_frequency": 1, "print_frequency": 15}


if __name__ == "__main__":
    args = options(__doc__, epochs=get_trainer_params()["epochs"], batch_size=32)
    trainer_params = {**get_trainer_params(), "epochs": args.epochs}
    kfold = AsyncKFold(2, get_dataset(args), args.root_dir, get_criterion(), args.batch_size,
                       executor=args.executor)  # fmt: skip
    table = kfold(get_models(), get_schedulers(), get_optimizer, trainer_params)
    scores = table.groupby(["model", "scheduler"])["val_accuracy"].mean()
    print(scores.to_string())
    print(f"best validation accuracy: {scores.max():.4f} ({', '.join(scores.idxmax())})")
