"""Channel providers: one module per provider; each implements
actors.channel_sender.ChannelSender."""
