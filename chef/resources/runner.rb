# flotilla_runner — registers a runner with GitLab (`flotilla register --non-interactive`, as
# `gitlab-runner register` is called) or unregisters it, idempotently. The registration token
# reaches the command only through its environment (REGISTRATION_TOKEN), never its command line
# or a log; the command and the resource are sensitive. What `flotilla register` writes (the
# runner's id and authentication token) stays in <registered_dir>/<name>.toml, mode 0400, root's;
# flotilla::config reads it for the runner of that name in node['flotilla']['runners'] that has
# no token of its own.
#
#   flotilla_runner 'shared-gce' do
#     url 'https://gitlab.example.com/'
#     registration_token vault_item['registration_token']
#     executor 'docker+machine'
#   end
unified_mode true
provides :flotilla_runner

property :runner_name, String, name_property: true
property :url, String, required: true
# GitLab's registration token (deprecated workflow) ...
property :registration_token, String, sensitive: true
# ... or a runner authentication token (glrt-) created in GitLab's UI or API.
property :token, String, sensitive: true
property :executor, String, default: 'docker+machine'
# `register` needs a default job image for docker executors (as `gitlab-runner register` does);
# the runner's image in config.toml still comes from node['flotilla']['runners'].
property :docker_image, String, default: 'alpine:latest'
property :tag_list, Array, default: []
property :run_untagged, [true, false], default: false
property :locked, [true, false], default: true
property :binary_path, String, default: lazy { node['flotilla']['binary_path'] }
property :registered_dir, String, default: lazy { node['flotilla']['registered_dir'] }

action_class do
  def registered_file
    ::File.join(new_resource.registered_dir, "#{new_resource.runner_name}.toml")
  end

  # GitLab Runner's environment variables for `register`; the secret only here. The server-side
  # settings (tags, run untagged, locked) go only with a registration token: a runner created
  # in GitLab (glrt- token) has them in GitLab, and `register` refuses them, as GitLab Runner does.
  def register_environment
    env = {
      'CI_SERVER_URL' => new_resource.url,
      'RUNNER_NAME' => new_resource.runner_name,
      'RUNNER_EXECUTOR' => new_resource.executor,
      'DOCKER_IMAGE' => new_resource.docker_image
    }
    if new_resource.token
      env['CI_SERVER_TOKEN'] = new_resource.token
    else
      env['REGISTRATION_TOKEN'] = new_resource.registration_token
      env['RUNNER_TAG_LIST'] = new_resource.tag_list.join(',')
      env['REGISTER_RUN_UNTAGGED'] = new_resource.run_untagged.to_s
      env['REGISTER_LOCKED'] = new_resource.locked.to_s
    end
    env
  end
end

action :register do
  if new_resource.registration_token.nil? && new_resource.token.nil?
    raise "flotilla_runner[#{new_resource.runner_name}]: registration_token or token is required"
  end

  file_path = registered_file
  execute "flotilla register #{new_resource.runner_name}" do
    command "#{new_resource.binary_path} register --non-interactive --config #{file_path}"
    environment register_environment
    sensitive true
    umask '0077'
    creates file_path
  end

  file file_path do
    owner 'root'
    group 'root'
    mode '0400'
    sensitive true
  end
end

action :unregister do
  file_path = registered_file
  execute "flotilla unregister #{new_resource.runner_name}" do
    command "#{new_resource.binary_path} unregister --config #{file_path} --name #{new_resource.runner_name}"
    sensitive true
    only_if { ::File.exist?(file_path) }
  end

  file file_path do
    action :delete
  end
end
