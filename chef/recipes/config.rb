# flotilla::config — config.toml from node['flotilla']['config'] and node['flotilla']['runners'].
#
# The template owns the file, mode 0600, owned by the service user (whose directory it is, so
# the manager can rewrite it on token rotation). `verify` runs `flotilla config check` on the
# rendered file before it replaces the old one, so a bad config never lands. `sensitive` keeps
# the diff (tokens) out of chef-client's output. No restart: Flotilla reloads the file itself
# when it changes; the delayed :reload (SIGHUP) only makes that explicit.
attrs = node['flotilla']
config_path = attrs['config_path']

template config_path do
  source 'config.toml.erb'
  owner attrs['user']
  group attrs['group']
  mode '0600'
  sensitive true
  verify "#{attrs['binary_path']} config check %{path}"
  # Lazy: the file on disk is read when the template runs, after install and registration.
  variables(lazy do
    runners = Flotilla::Config.runners(
      attrs['runners'], Flotilla::Config.runners_on_disk(config_path), attrs['registered_dir'],
      node.run_state['flotilla_tokens']
    )
    runners.each do |runner|
      next unless runner['executor'].to_s.start_with?('docker') && attrs['helper_image']

      defaults = { 'helper_image' => attrs['helper_image'] }
      defaults['helper_image_archive'] = attrs['helper_image_archive'] if attrs['helper_image_archive_url']
      runner['docker'] = defaults.merge(runner['docker'] || {})
    end
    { config: attrs['config'].reject { |k, _| k == 'runners' }, runners: runners }
  end)
  notifies :reload, 'service[flotilla]', :delayed
end
