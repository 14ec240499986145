# Flotilla::Toml — turns the cookbook's attribute hashes into config.toml text, and
# Flotilla::Config — picks the runners' tokens that must survive a chef-client run (a token
# `flotilla register` obtained, a token the manager rotated).
#
# The rendering is a pure function of its input: the same attributes give the same bytes (no
# timestamps, no hash-order surprises: keys come out in the order the attributes hold them, each
# table's plain values before its sub-tables, as TOML requires). Hashes become tables, lists of
# hashes arrays of tables, strings are escaped, integers, floats, booleans, times and lists keep
# their TOML types, and nil drops a key (TOML has no null: that is how a role removes a default).

require 'time'

module Flotilla
  # Renders Ruby values (from node attributes) as TOML.
  module Toml
    BARE_KEY = /\A[A-Za-z0-9_-]+\z/.freeze

    module_function

    def key(name)
      name = name.to_s
      name.match?(BARE_KEY) ? name : string(name)
    end

    def string(value)
      escaped = value.to_s.each_char.map do |c|
        case c
        when '"' then '\\"'
        when '\\' then '\\\\'
        when "\b" then '\\b'
        when "\t" then '\\t'
        when "\n" then '\\n'
        when "\f" then '\\f'
        when "\r" then '\\r'
        else
          c.ord < 0x20 || c.ord == 0x7f ? format('\\u%04X', c.ord) : c
        end
      end
      "\"#{escaped.join}\""
    end

    def float(value)
      return 'nan' if value.nan?
      return (value.positive? ? 'inf' : '-inf') if value.infinite?

      value.to_s
    end

    # A value written after `key = ` (an inline table for a hash inside a list of mixed values).
    def value(value)
      case value
      when String, Symbol then string(value)
      when true, false then value.to_s
      when Integer then value.to_s
      when Float then float(value)
      when Time then value.utc.strftime('%Y-%m-%dT%H:%M:%SZ')
      when Array then "[#{value.compact.map { |v| value(v) }.join(', ')}]"
      when Hash
        pairs = value.reject { |_, v| v.nil? }.map { |k, v| "#{key(k)} = #{value(v)}" }
        pairs.empty? ? '{}' : "{ #{pairs.join(', ')} }"
      else
        raise ArgumentError, "flotilla: cannot write a #{value.class} to config.toml"
      end
    end

    def table?(value)
      value.is_a?(Hash)
    end

    def table_array?(value)
      value.is_a?(Array) && !value.empty? && value.all? { |v| v.is_a?(Hash) }
    end

    # [key, rendered value] for a table's plain (non-table) entries, in order; nil values dropped.
    def plain_entries(hash)
      hash.reject { |_, v| v.nil? || table?(v) || table_array?(v) }.map { |k, v| [key(k), value(v)] }
    end

    # The sub-tables of a hash, in order: [[kind, name, value], ...] with kind :table or :array.
    def sub_tables(hash)
      hash.each_with_object([]) do |(k, v), out|
        if table?(v)
          out << [:table, k.to_s, v]
        elsif table_array?(v)
          v.each { |item| out << [:array, k.to_s, item] }
        end
      end
    end

    # A table's text at a dotted path, its sub-tables nested and indented by two spaces a level
    # (GitLab Runner's own layout).
    def table(path, hash, kind, depth)
      indent = '  ' * depth
      header = path.map { |p| key(p) }.join('.')
      lines = [kind == :array ? "#{indent}[[#{header}]]" : "#{indent}[#{header}]"]
      plain_entries(hash).each { |k, v| lines << "#{indent}  #{k} = #{v}" }
      sub_tables(hash).each { |sub_kind, name, value| lines << table(path + [name], value, sub_kind, depth + 1) }
      lines.join("\n")
    end
  end

  # Which token each runner gets in the rendered file.
  module Config
    TOKEN_KEYS = %w[token token_obtained_at token_expires_at].freeze

    module_function

    # The runners of a config.toml on disk ([] when missing or unreadable: the template then
    # renders the attributes alone, and `verify` still guards the result).
    def runners_on_disk(path)
      return [] unless ::File.exist?(path)

      require 'tomlrb'
      Array(Tomlrb.parse(::File.read(path))['runners'])
    rescue StandardError
      []
    end

    # A runner's registration file (written by `flotilla register` through the flotilla_runner
    # resource): its first runner, or nil.
    def registered(dir, name)
      runners_on_disk(::File.join(dir, "#{name}.toml")).first
    end

    def newer?(a, b)
      return false if a.nil?
      return true if b.nil?

      Time.parse(a.to_s) > Time.parse(b.to_s)
    end

    # The runner hashes to render. For each runner from the attributes:
    # - no token: the one in `tokens` under the runner's name (node.run_state['flotilla_tokens'],
    #   filled from a vault by a wrapper recipe, so it is never saved with the node), else the
    #   token (and id) `flotilla register` wrote to `registered_dir/<name>.toml`;
    # - then, when config.toml on disk has a runner with the same `id` and a token, that token
    #   and its times win (the manager rotated it), unless the attributes carry a newer
    #   token_obtained_at (a token replaced in the vault).
    def runners(attr_runners, disk_runners, registered_dir, tokens = {})
      Array(attr_runners).map do |attrs|
        runner = attrs.to_h { |k, v| [k.to_s, v] }
        runner['token'] ||= (tokens || {})[runner['name'].to_s]
        if runner['token'].nil? && (reg = registered(registered_dir, runner['name'].to_s))
          runner['id'] ||= reg['id']
          TOKEN_KEYS.each { |k| runner[k] = reg[k] unless reg[k].nil? }
        end
        on_disk = disk_runners.find { |d| !runner['id'].nil? && d['id'] == runner['id'] && d['token'] }
        if on_disk && !newer?(runner['token_obtained_at'], on_disk['token_obtained_at'])
          TOKEN_KEYS.each { |k| runner[k] = on_disk[k] }
        end
        runner
      end
    end
  end
end
