"""Quality figures computed from trained models (StarGAN's attribute accuracy and reconstruction error)."""
