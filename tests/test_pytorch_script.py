"""A PyTorch MNIST-example script, with only its imports renamed, runs unchanged: the
idioms of PyTorch's own example (model.to(device), size(0), argmax(dim, keepdim), eq,
view_as, item(), format specs, torch.max(x, 1), TensorDataset and DataLoader)."""

import math

import tinygrad_conv.nn.functional as F
from tinygrad_conv.utils.data import DataLoader, TensorDataset

import tinygrad_conv as torch
import tinygrad_conv.nn as nn
import tinygrad_conv.optim as optim
from tinygrad_conv.optim.lr_scheduler import StepLR


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 4, 3, 1)
        self.conv2 = nn.Conv2d(4, 8, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.fc1 = nn.Linear(8 * 5 * 5, 16)
        self.fc2 = nn.Linear(16, 10)

    def forward(self, x):
        x = F.relu(self.conv1(x))
        x = F.relu(self.conv2(x))
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = self.fc2(x)
        return F.log_softmax(x, dim=1)



def test_pytorch_example_runs_unchanged():
    torch.manual_seed(1)
    device = torch.device("cpu")
    x = torch.randn(32, 1, 14, 14)
    y = torch.randint(0, 10, (32,))
    loader = DataLoader(TensorDataset(x, y), batch_size=8, shuffle=True)
    model = Net().to(device)
    optimizer = optim.Adam(model.parameters(), lr=1e-2)
    scheduler = StepLR(optimizer, step_size=1, gamma=0.7)
    # conv 4*9+4, conv 8*4*9+8, fc 200*16+16, fc 16*10+10
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 3722
    for _ in range(2):
        model.train()
        for data, target in loader:
            data, target = data.to(device), target.to(device)
            optimizer.zero_grad()
            output = model(data)
            loss = F.nll_loss(output, target)
            loss.backward()
            optimizer.step()
        scheduler.step()
        model.eval()
        test_loss, correct = 0, 0
        with torch.no_grad():
            for data, target in loader:
                output = model(data)
                test_loss += F.nll_loss(output, target, reduction="sum").item()
                pred = output.argmax(dim=1, keepdim=True)
                correct += pred.eq(target.view_as(pred)).sum().item()
        assert math.isfinite(test_loss) and 0 <= correct <= len(loader.dataset)
        _, predicted = torch.max(output, 1)
        assert predicted.shape == (output.size(0),) and f"{loss:.3f}" == f"{loss.item():.3f}"
    assert math.isclose(optimizer.param_groups[0]["lr"], 1e-2 * 0.7 ** 2)
