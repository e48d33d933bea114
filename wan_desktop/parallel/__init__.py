"""More than one GPU on torch.distributed (issue 19): the process layout (layout.py), launching and
joining the processes (launch.py), the process group with its CFG / sequence sub-groups and
timed, cancel-aware synchronisation (group.py), and the components each rank runs with
(ranked.py). Nothing here imports torch at import time.

One generation runs on every rank with the same seed, so every rank holds the same latents;
ranks split the work of each denoiser call (CFG: cond on one half, uncond on the other, one
all_gather of the velocity per call; sequence: the DiT's tokens, through the sequence-parallel
attention) and rank 0 alone encodes the prompt and images (broadcast), decodes (broadcast of the
uint8 frames), writes the output, reports progress and asks the review.
"""
