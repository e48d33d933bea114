"""Our PyTorch ports of the Wan modules. Attribute names equal the official checkpoint keys."""
