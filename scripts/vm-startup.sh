# Placeholder: the VM startup script (written by the docker TLS work).
