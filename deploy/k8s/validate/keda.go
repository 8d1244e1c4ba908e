package main

// KEDA's ScaledObject and TriggerAuthentication (keda.sh/v1alpha1), written out here from
// KEDA's apis/keda/v1alpha1 (scaledobject_types.go, triggerauthentication_types.go) for the
// fields these manifests may use: importing KEDA itself would bring its whole operator. A
// field KEDA has and this file lacks is reported as unknown; add it here, not in a manifest.

import (
	"fmt"
	"sort"

	autoscalingv2 "k8s.io/api/autoscaling/v2"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

type ScaledObject struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ScaledObjectSpec `json:"spec"`
}

type ScaledObjectSpec struct {
	ScaleTargetRef        *ScaleTarget    `json:"scaleTargetRef"`
	PollingInterval       *int32          `json:"pollingInterval,omitempty"`
	InitialCooldownPeriod *int32          `json:"initialCooldownPeriod,omitempty"`
	CooldownPeriod        *int32          `json:"cooldownPeriod,omitempty"`
	IdleReplicaCount      *int32          `json:"idleReplicaCount,omitempty"`
	MinReplicaCount       *int32          `json:"minReplicaCount,omitempty"`
	MaxReplicaCount       *int32          `json:"maxReplicaCount,omitempty"`
	Advanced              *AdvancedConfig `json:"advanced,omitempty"`
	Triggers              []ScaleTriggers `json:"triggers"`
	Fallback              *Fallback       `json:"fallback,omitempty"`
}

type ScaleTarget struct {
	Name                   string `json:"name"`
	APIVersion             string `json:"apiVersion,omitempty"`
	Kind                   string `json:"kind,omitempty"`
	EnvSourceContainerName string `json:"envSourceContainerName,omitempty"`
}

type AdvancedConfig struct {
	HorizontalPodAutoscalerConfig *HorizontalPodAutoscalerConfig `json:"horizontalPodAutoscalerConfig,omitempty"`
	RestoreToOriginalReplicaCount bool                           `json:"restoreToOriginalReplicaCount,omitempty"`
}

type HorizontalPodAutoscalerConfig struct {
	Behavior *autoscalingv2.HorizontalPodAutoscalerBehavior `json:"behavior,omitempty"`
	Name     string                                         `json:"name,omitempty"`
}

type Fallback struct {
	FailureThreshold int32  `json:"failureThreshold"`
	Replicas         int32  `json:"replicas"`
	Behavior         string `json:"behavior,omitempty"`
}

type ScaleTriggers struct {
	Type              string                         `json:"type"`
	Name              string                         `json:"name,omitempty"`
	UseCachedMetrics  bool                           `json:"useCachedMetrics,omitempty"`
	Metadata          map[string]string              `json:"metadata"`
	AuthenticationRef *AuthenticationRef             `json:"authenticationRef,omitempty"`
	MetricType        autoscalingv2.MetricTargetType `json:"metricType,omitempty"`
}

type AuthenticationRef struct {
	Name string `json:"name"`
	Kind string `json:"kind,omitempty"`
}

type TriggerAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              TriggerAuthenticationSpec `json:"spec"`
}

type TriggerAuthenticationSpec struct {
	SecretTargetRef []AuthSecretTargetRef `json:"secretTargetRef,omitempty"`
	Env             []AuthEnvironment     `json:"env,omitempty"`
}

type AuthSecretTargetRef struct {
	Parameter string `json:"parameter"`
	Name      string `json:"name"`
	Key       string `json:"key"`
}

type AuthEnvironment struct {
	Parameter     string `json:"parameter"`
	Name          string `json:"name"`
	ContainerName string `json:"containerName,omitempty"`
}

// The Apache Kafka scaler's metadata keys and authentication parameters (KEDA 2.x docs,
// scalers/apache-kafka); the API takes any string map, KEDA rejects unknown keys at run time.
var kafkaMetadata = set(
	"bootstrapServers", "bootstrapServersFromEnv", "consumerGroup", "consumerGroupFromEnv",
	"topic", "topicFromEnv", "lagThreshold", "activationLagThreshold", "offsetResetPolicy",
	"allowIdleConsumers", "excludePersistentLag", "scaleToZeroOnInvalidOffset",
	"limitToPartitionsWithLag", "ensureEvenDistributionOfPartitions", "partitionLimitation",
	"version", "sasl", "tls", "unsafeSsl",
)

var kafkaAuthParameters = set(
	"sasl", "username", "password", "tls", "ca", "cert", "key", "keyPassword",
)

func set(items ...string) map[string]bool {
	out := make(map[string]bool, len(items))
	for _, item := range items {
		out[item] = true
	}
	return out
}

func checkScaledObject(so *ScaledObject) []string {
	var problems []string
	spec := so.Spec
	if spec.ScaleTargetRef == nil || spec.ScaleTargetRef.Name == "" {
		problems = append(problems, "spec.scaleTargetRef.name: required")
	}
	if len(spec.Triggers) == 0 {
		problems = append(problems, "spec.triggers: at least one is required")
	}
	lo, hi := int32(0), int32(100) // KEDA's defaults
	if spec.MinReplicaCount != nil {
		lo = *spec.MinReplicaCount
	}
	if spec.MaxReplicaCount != nil {
		hi = *spec.MaxReplicaCount
	}
	if lo > hi {
		problems = append(problems, fmt.Sprintf("spec.minReplicaCount %d > spec.maxReplicaCount %d", lo, hi))
	}
	if spec.IdleReplicaCount != nil && *spec.IdleReplicaCount >= lo {
		problems = append(problems, "spec.idleReplicaCount: must be less than minReplicaCount")
	}
	for i, trigger := range spec.Triggers {
		if trigger.Type != "kafka" && trigger.Type != "apache-kafka" {
			continue
		}
		var unknown []string
		for key := range trigger.Metadata {
			if !kafkaMetadata[key] {
				unknown = append(unknown, key)
			}
		}
		sort.Strings(unknown)
		for _, key := range unknown {
			problems = append(problems, fmt.Sprintf("spec.triggers[%d].metadata.%s: not a key of the kafka scaler", i, key))
		}
	}
	return problems
}

func checkTriggerAuthentication(ta *TriggerAuthentication) []string {
	var problems []string
	for i, ref := range ta.Spec.SecretTargetRef {
		if !kafkaAuthParameters[ref.Parameter] {
			problems = append(problems, fmt.Sprintf("spec.secretTargetRef[%d].parameter: %q is not a kafka scaler parameter", i, ref.Parameter))
		}
		if ref.Name == "" || ref.Key == "" {
			problems = append(problems, fmt.Sprintf("spec.secretTargetRef[%d]: name and key are required", i))
		}
	}
	return problems
}
