"""Training the reference CRN: perceptual and diversity losses, Adam, progressive growth (torch)."""
