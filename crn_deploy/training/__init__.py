"""Training the reference models of the families that declare a trainer (CRN, PosGen): perceptual and diversity
losses, Adam, resumable state (torch)."""
