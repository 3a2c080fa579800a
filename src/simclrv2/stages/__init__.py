"""The stages of SimCLRv2, each a function that reads like the paper: pretrain, fine-tune (and the
supervised baseline), distil, evaluate (linear, kNN), embed."""
