"""The distillation job: config, data, the trainer loop and its report."""
