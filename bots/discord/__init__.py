"""The Discord adapter (discord.py): `/imagine`, DM prompts and buttons, translated into Conversation calls."""
