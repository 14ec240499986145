# flotilla::default — install, configure and run Flotilla. Upgrades of a running manager are
# flotilla::upgrade's (run on demand, one node at a time), never this recipe's.
include_recipe 'flotilla::install'
include_recipe 'flotilla::config'
include_recipe 'flotilla::service'
