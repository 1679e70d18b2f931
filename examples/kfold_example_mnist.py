"""Asynchronous K-fold cross-validation of two models x two schedulers on MNIST (seed example).

Expected validation accuracy of the best model: about 0.98 for the full run (2 folds of
60,000 images, 2 epochs); ``--subset 2000 --epochs 1 --batch-size 16`` reaches about 0.85.

    python examples/kfold_example_mnist.py [--subset N] [--epochs E] [--executor serial]
"""

from common import mnist, options, subset
from torch import nn
from torch.optim import Adam
from torchvision.transforms import ToTensor

from raynn.compat import AsyncKFold


class LeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 6, 5), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * 4 * 4, 120), nn.ReLU(), nn.Linear(120, 10)
        )

    def forward(self, x):
        return self.classifier(self.features(x))


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10))

    def forward(self, x):
        return self.net(x)


def get_optimizer(model):
    return Adam(model.parameters(), 1e-3)


def get_models():
    return [LeNet, MLP]


def get_schedulers():
    return ["cosine", "warm"]


def get_dataset(args):
    return subset(mnist(True, ToTensor(), args.download), args.subset)


def get_criterion():
    return nn.CrossEntropyLoss()


def get_trainer_params():
    return {"epochs": 2, "save_checkpoint_frequency": 1, "print_frequency": 15}


if __name__ == "__main__":
    args = options(__doc__, epochs=get_trainer_params()["epochs"], batch_size=32)
    trainer_params = {**get_trainer_params(), "epochs": args.epochs}
    kfold = AsyncKFold(2, get_dataset(args), args.root_dir, get_criterion(), args.batch_size,
                       executor=args.executor)  # fmt: skip
    table = kfold(get_models(), get_schedulers(), get_optimizer, trainer_params)
    scores = table.groupby(["model", "scheduler"])["val_accuracy"].mean()
    print(scores.to_string())
    print(f"best validation accuracy: {scores.max():.4f} ({', '.join(scores.idxmax())})")
