"""The slotfill training pipeline and command line."""
