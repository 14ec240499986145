# A ChefSpec-like harness for the flotilla cookbook, on plain Ruby (Debian's ruby, ruby-erubis,
# ruby-tomlrb, ruby-rspec). Chef itself cannot be installed here, so nothing is converged: the
# harness loads attributes/default.rb, deep-merges a role's default and override attributes over
# them as Chef does (hashes merge key by key, a higher precedence level replaces an array whole),
# evaluates the recipes, and records every resource with its properties, actions, notifications
# and guards. Templates are rendered with Erubis, the engine and trimming rules Chef renders with.
# Custom resources from resources/ are recorded like any other, and their actions are evaluated
# on demand (`step_into`), recording the resources they declare.
#
# The cookbook must use only what this harness implements; an unknown DSL method raises.

require 'erubis'
require 'set'

module Harness
  COOKBOOK = File.expand_path('..', __dir__)
  REPO = File.expand_path('..', COOKBOOK)

  # Known Chef resource types the cookbook may use (an unknown one is an error, so a typo fails).
  RESOURCE_TYPES = %i[
    group user directory package dpkg_package apt_package remote_file cookbook_file template file
    systemd_unit service execute ruby_block link
  ].freeze

  # A Hash whose reads of a missing key make a nested hash (Chef's VividMash), for attribute files.
  class VividHash < Hash
    def [](key)
      key = key.to_s
      return fetch(key) if key?(key)
      store(key, VividHash.new)
    end

    def []=(key, value)
      store(key.to_s, Harness.stringify(value))
    end
  end

  def self.stringify(value)
    case value
    when Hash then value.each_with_object({}) { |(k, v), h| h[k.to_s] = stringify(v) }
    when Array then value.map { |v| stringify(v) }
    when Symbol then value.to_s
    else value
    end
  end

  # Chef's merge between precedence levels: hashes merge key by key, anything else is replaced.
  def self.hash_only_merge(low, high)
    return deep_copy(high) unless low.is_a?(Hash) && high.is_a?(Hash)

    out = deep_copy(low)
    high.each { |k, v| out[k] = out.key?(k) ? hash_only_merge(out[k], v) : deep_copy(v) }
    out
  end

  def self.deep_copy(value)
    case value
    when Hash then value.each_with_object({}) { |(k, v), h| h[k] = deep_copy(v) }
    when Array then value.map { |v| deep_copy(v) }
    else value
    end
  end

  # Read-only merged attributes: a frozen deep copy, so a recipe cannot write through `node[...]`.
  def self.deep_freeze(value)
    case value
    when Hash then value.each_value { |v| deep_freeze(v) }
    when Array then value.each { |v| deep_freeze(v) }
    end
    value.freeze
  end

  # The node: attribute levels and the merged view recipes read.
  class Node
    attr_reader :default, :override, :run_state

    def initialize
      @default = VividHash.new
      @override = VividHash.new
      @run_state = {}
      @role_default = {}
      @role_override = {}
      @automatic = { 'platform' => 'debian', 'platform_family' => 'debian', 'hostname' => 'node1' }
    end

    def apply_role(role)
      @role_default = Harness.stringify(role.default_attributes)
      @role_override = Harness.stringify(role.override_attributes)
    end

    def merged
      defaults = Harness.hash_only_merge(@default, @role_default)
      overrides = Harness.hash_only_merge(@override, @role_override)
      Harness.deep_freeze(Harness.hash_only_merge(Harness.hash_only_merge(defaults, overrides), @automatic))
    end

    def [](key)
      merged[key.to_s]
    end
  end

  # Evaluates an attribute file (`default[...] = ...`, `override[...] = ...`, `node[...]`).
  class AttributeContext
    def initialize(node)
      @node = node
    end

    attr_reader :node

    def default
      @node.default
    end

    def override
      @node.override
    end
  end

  # A role file: name, description, run_list, default_attributes, override_attributes.
  class Role
    def self.load(path)
      role = new
      role.instance_eval(File.read(path), path)
      role
    end

    def name(value = nil)
      @name = value if value
      @name
    end

    def description(value = nil)
      @description = value if value
      @description
    end

    def run_list(*items)
      @run_list = items.flatten unless items.empty?
      @run_list || []
    end

    def default_attributes(value = nil)
      @default_attributes = value if value
      @default_attributes || {}
    end

    def override_attributes(value = nil)
      @override_attributes = value if value
      @override_attributes || {}
    end
  end

  # `lazy { }`: evaluated when the resource would run (here: when a test renders or asks).
  class Lazy
    def initialize(&block)
      @block = block
    end

    def call
      @block.call
    end
  end

  # One recorded resource.
  class Resource
    attr_reader :type, :name, :properties, :notifications, :subscriptions, :guards, :cookbook_recipe
    attr_accessor :actions

    def initialize(type, name, recipe)
      @type = type
      @name = name
      @cookbook_recipe = recipe
      @properties = {}
      @notifications = []
      @subscriptions = []
      @guards = []
      @actions = nil
    end

    def id
      "#{type}[#{name}]"
    end

    def evaluate(&block)
      DSL.new(self).instance_eval(&block) if block
      self
    end

    def [](key)
      @properties[key.to_sym]
    end

    # The resource's actions, or the type's default one.
    def effective_actions
      @actions || [DEFAULT_ACTIONS.fetch(type, :nothing)]
    end

    DEFAULT_ACTIONS = {
      group: :create, user: :create, directory: :create, package: :install, dpkg_package: :install,
      apt_package: :install, remote_file: :create, cookbook_file: :create, template: :create,
      file: :create, systemd_unit: :create, service: :nothing, execute: :run, ruby_block: :run,
      link: :create
    }.freeze

    # The resource's block: any property by name (a BasicObject, so names such as `system` or
    # `format` are properties, not Kernel methods), plus Chef's common DSL.
    class DSL < BasicObject
      def initialize(resource)
        @r = resource
      end

      def action(*names)
        @r.actions = names.flatten
      end

      def notifies(action, target, timing = :delayed)
        @r.notifications << { action: action.to_sym, target: target, timing: timing.to_sym }
      end

      def subscribes(action, target, timing = :delayed)
        @r.subscriptions << { action: action.to_sym, target: target, timing: timing.to_sym }
      end

      def only_if(command = nil, &block)
        @r.guards << { kind: :only_if, command: command, block: block }
      end

      def not_if(command = nil, &block)
        @r.guards << { kind: :not_if, command: command, block: block }
      end

      def lazy(&block)
        Lazy.new(&block)
      end

      def node
        @r.cookbook_recipe.node
      end

      def raise(*args)
        ::Kernel.raise(*args)
      end

      def method_missing(name, *args, &block)
        if args.empty? && block.nil?
          return @r.properties[name] if @r.properties.key?(name)
          # As Chef's enclosing_provider: a custom resource's action helpers and new_resource.
          recipe = @r.cookbook_recipe
          return recipe.__send__(name) if recipe.respond_to?(name, true) && recipe.is_a?(ActionContext)

          ::Kernel.raise ::NoMethodError, "#{@r.id}: property #{name} read before set"
        end
        @r.properties[name] = block && args.empty? ? block : (args.length == 1 ? args.first : args)
      end

      def respond_to_missing?(*)
        true
      end
    end
  end

  # A custom resource class from resources/*.rb (Chef's resource DSL subset).
  class CustomResource
    attr_reader :resource_name, :properties, :action_blocks, :default_action, :action_class_blocks

    def self.load(path)
      cr = new(File.basename(path, '.rb'))
      cr.instance_eval(File.read(path), path)
      cr
    end

    def initialize(file_name)
      @resource_name = :"flotilla_#{file_name}"
      @properties = {}
      @action_blocks = {}
      @action_class_blocks = []
      @default_action = nil
    end

    attr_accessor :node

    def unified_mode(_flag); end

    def lazy(&block)
      Lazy.new(&block)
    end

    def provides(name)
      @resource_name = name.to_sym
    end

    def resource_name_is(name)
      @resource_name = name.to_sym
    end

    def property(name, type = nil, **opts)
      @properties[name.to_sym] = { type: type }.merge(opts)
    end

    def default_action(name = nil)
      @default_action = name.to_sym if name
      @default_action
    end

    def action(name, &block)
      @default_action ||= name.to_sym
      @action_blocks[name.to_sym] = block
    end

    def action_class(&block)
      @action_class_blocks << block
    end

    # The resource's property values: those set, else defaults (name_property from the name).
    def values_for(resource)
      @properties.each_with_object({}) do |(name, opts), out|
        out[name] =
          if resource.properties.key?(name)
            resource.properties[name]
          elsif opts[:name_property]
            resource.name
          elsif opts.key?(:default)
            d = opts[:default]
            d.is_a?(Lazy) ? d.call : d
          end
      end
    end

    def validate!(resource)
      unknown = resource.properties.keys - @properties.keys - %i[sensitive]
      raise ArgumentError, "#{resource.id}: unknown properties #{unknown.inspect}" unless unknown.empty?

      @properties.each do |name, opts|
        next unless opts[:required] && !resource.properties.key?(name)

        raise ArgumentError, "#{resource.id}: property #{name} is required"
      end
    end
  end

  # The run: node, recipes, recorded resources.
  class Run
    attr_reader :node, :resources, :included_recipes, :logs, :custom_resources

    def initialize(role: nil, &attribute_overrides)
      @node = Node.new
      @resources = []
      @included_recipes = []
      @logs = []
      # As chef-client: the run list (roles) is expanded before the cookbook's attribute files
      # load, so an attribute file reading node[...] already sees the role's values.
      @node.apply_role(Role.load(path("roles/#{role}.rb"))) if role
      AttributeContext.new(@node).instance_eval(File.read(path('attributes/default.rb')), path('attributes/default.rb'))
      AttributeContext.new(@node).instance_eval(&attribute_overrides) if attribute_overrides
      Dir[path('libraries/*.rb')].sort.each { |f| require f } # once per process, as chef-client loads libraries once per run
      @custom_resources = Dir[path('resources/*.rb')].sort.to_h do |f|
        cr = CustomResource.load(f)
        cr.node = @node
        [cr.resource_name, cr]
      end
    end

    def path(rel)
      File.join(COOKBOOK, rel)
    end

    def converge(*recipes)
      recipes.each { |r| include_recipe(r.include?('::') ? r : "flotilla::#{r}") }
      self
    end

    def include_recipe(name)
      return if @included_recipes.include?(name)

      @included_recipes << name
      cookbook, recipe = name.split('::')
      raise ArgumentError, "unknown cookbook #{cookbook}" unless cookbook == 'flotilla'

      file = path("recipes/#{recipe || 'default'}.rb")
      RecipeContext.new(self, name).instance_eval(File.read(file), file)
    end

    def find(id)
      @resources.find { |r| r.id == id } || raise(KeyError, "no resource #{id}; have: #{@resources.map(&:id).join(', ')}")
    end

    def find_all(type)
      @resources.select { |r| r.type == type.to_sym }
    end

    # Every resource reachable from `resource` through notifications (and subscriptions that
    # listen to it), with the action each would run: [[resource, action], ...].
    def notification_chain(resource, seen = Set.new)
      out = []
      edges = resource.notifications.map { |n| [n[:target], n[:action]] }
      @resources.each do |r|
        r.subscriptions.each { |s| edges << [r.id, s[:action]] if s[:target] == resource.id }
      end
      edges.each do |target_id, action|
        target = find(target_id)
        key = [target.id, action]
        next if seen.include?(key)

        seen << key
        out << [target, action]
        out.concat(notification_chain(target, seen))
      end
      out
    end

    # Renders a template resource with Erubis, as Chef does (variables become @ivars, `node`).
    def render(resource)
      variables = resource[:variables]
      variables = variables.call if variables.is_a?(Lazy)
      source = File.read(path("templates/#{resource[:source]}"))
      context = TemplateContext.new(@node, variables || {})
      Erubis::Eruby.new(source).evaluate(context)
    end

    # Evaluates a custom resource's action, recording the resources it declares.
    def step_into(resource, action = nil)
      cr = @custom_resources.fetch(resource.type)
      action ||= resource.actions&.first || cr.default_action
      ctx = ActionContext.new(self, resource, cr)
      before = @resources.length
      ctx.instance_eval(&cr.action_blocks.fetch(action))
      @resources[before..]
    end
  end

  # Chef's template context: variables as instance variables, and `node`.
  class TemplateContext < Erubis::Context
    def initialize(node, variables)
      super(variables)
      @__node = node
    end

    def node
      @__node
    end
  end

  # What a recipe file is evaluated in.
  class RecipeContext
    def initialize(run, recipe_name)
      @run = run
      @recipe_name = recipe_name
    end

    def node
      @run.node
    end

    def include_recipe(name)
      @run.include_recipe(name)
    end

    def lazy(&block)
      Lazy.new(&block)
    end

    def platform_family?(*names)
      names.map(&:to_s).include?(node['platform_family'])
    end

    def log(message, &block)
      @run.logs << message
      declare(:log, message, &block)
    end

    def declare(type, name, &block)
      r = Resource.new(type, name, self)
      r.evaluate(&block)
      if (cr = @run.custom_resources[type])
        cr.validate!(r)
      end
      @run.resources << r
      r
    end

    def method_missing(name, *args, &block)
      if RESOURCE_TYPES.include?(name) || @run.custom_resources.key?(name)
        raise ArgumentError, "#{name} needs exactly one name" unless args.length == 1

        return declare(name, args.first, &block)
      end
      super
    end

    def respond_to_missing?(name, include_private = false)
      RESOURCE_TYPES.include?(name) || @run.custom_resources.key?(name) || super
    end
  end

  # What a custom resource's action is evaluated in: a recipe context plus `new_resource`
  # and the action_class helpers.
  class ActionContext < RecipeContext
    NewResource = Struct.new(:values, :id, :sensitive) do
      def method_missing(name, *args)
        return values[name] if args.empty? && values.key?(name)

        super
      end

      def respond_to_missing?(name, include_private = false)
        values.key?(name) || super
      end
    end

    def initialize(run, resource, custom)
      super(run, "#{resource.id} action")
      @new_resource = NewResource.new(custom.values_for(resource), resource.id, resource[:sensitive])
      custom.action_class_blocks.each { |b| singleton_class.class_eval(&b) }
    end

    attr_reader :new_resource
  end
end
