"""``python -m moderation`` runs the command-line interface."""

from moderation.cli import main

main()
