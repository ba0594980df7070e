"""The admin/config service: a registry of brokers, accounts and epic mappings over REST."""
