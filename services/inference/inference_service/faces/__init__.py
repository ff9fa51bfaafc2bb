"""Face geometry shared by the restorers: alignment to the FFHQ template and paste-back."""
