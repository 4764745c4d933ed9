"""Pure pieces several methods share: the server loss and FedAvg."""
