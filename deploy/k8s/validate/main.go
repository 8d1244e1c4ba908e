// Command validate checks rendered Kubernetes manifests (kustomize build, helm template) the
// way an API server's decoding and the Pod Security admission would, without a cluster:
//
//   - every document is decoded strictly into its Go API type (k8s.io/api, prometheus-operator's
//     monitoring/v1, KEDA's types as written out in keda.go): an unknown or duplicated field,
//     a value of the wrong type, a bad quantity is an error, and so is a kind it does not know;
//   - every pod template (StatefulSet, Deployment, DaemonSet, Job, CronJob, Pod) must pass the
//     Pod Security Standard named by -level (restricted by default), with the checks of
//     k8s.io/pod-security-admission/policy at its latest version;
//   - a few rules the API server's validation would apply (names, labels, a workload's
//     selector matching its template, mounts naming a volume, probes naming a port) and a few
//     across objects (a Service, PodDisruptionBudget or PodMonitor selects some pod template,
//     a PodMonitor's port is one of its pods' ports, a ScaledObject targets a workload
//     present, a ConfigMap mounted is present).
//
// Usage: validate [-level restricted] FILE... ("-" or none: standard input). Prints one line
// per problem and exits 1 if there is any; otherwise one line of what it checked.
package main

import (
	"bufio"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	psapi "k8s.io/pod-security-admission/api"
	"k8s.io/pod-security-admission/policy"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// The kinds these manifests may hold, each with the Go type it must decode into.
var kinds = map[schema.GroupVersionKind]func() any{
	{Version: "v1", Kind: "ConfigMap"}:                                       func() any { return &corev1.ConfigMap{} },
	{Version: "v1", Kind: "Secret"}:                                          func() any { return &corev1.Secret{} },
	{Version: "v1", Kind: "Service"}:                                         func() any { return &corev1.Service{} },
	{Version: "v1", Kind: "ServiceAccount"}:                                  func() any { return &corev1.ServiceAccount{} },
	{Version: "v1", Kind: "PersistentVolumeClaim"}:                           func() any { return &corev1.PersistentVolumeClaim{} },
	{Version: "v1", Kind: "Pod"}:                                             func() any { return &corev1.Pod{} },
	{Group: "apps", Version: "v1", Kind: "StatefulSet"}:                      func() any { return &appsv1.StatefulSet{} },
	{Group: "apps", Version: "v1", Kind: "Deployment"}:                       func() any { return &appsv1.Deployment{} },
	{Group: "apps", Version: "v1", Kind: "DaemonSet"}:                        func() any { return &appsv1.DaemonSet{} },
	{Group: "batch", Version: "v1", Kind: "Job"}:                             func() any { return &batchv1.Job{} },
	{Group: "batch", Version: "v1", Kind: "CronJob"}:                         func() any { return &batchv1.CronJob{} },
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"}:            func() any { return &policyv1.PodDisruptionBudget{} },
	{Group: "autoscaling", Version: "v2", Kind: "HorizontalPodAutoscaler"}:   func() any { return &autoscalingv2.HorizontalPodAutoscaler{} },
	{Group: "networking.k8s.io", Version: "v1", Kind: "NetworkPolicy"}:       func() any { return &networkingv1.NetworkPolicy{} },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"}:        func() any { return &rbacv1.Role{} },
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"}: func() any { return &rbacv1.RoleBinding{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "PodMonitor"}:      func() any { return &monitoringv1.PodMonitor{} },
	{Group: "monitoring.coreos.com", Version: "v1", Kind: "ServiceMonitor"}:  func() any { return &monitoringv1.ServiceMonitor{} },
	{Group: "keda.sh", Version: "v1alpha1", Kind: "ScaledObject"}:            func() any { return &ScaledObject{} },
	{Group: "keda.sh", Version: "v1alpha1", Kind: "TriggerAuthentication"}:   func() any { return &TriggerAuthentication{} },
}

// object is one decoded document.
type object struct {
	where string // FILE#N: the Nth document of FILE, from 1
	gvk   schema.GroupVersionKind
	meta  *metav1.ObjectMeta
	value any
}

func (o object) String() string {
	return fmt.Sprintf("%s %s/%s", o.where, o.gvk.Kind, o.meta.Name)
}

func main() {
	level := flag.String("level", "restricted", "Pod Security Standard: baseline or restricted")
	flag.Parse()
	lvl, err := psapi.ParseLevel(*level)
	if err != nil {
		fmt.Fprintf(os.Stderr, "-level: %v\n", err)
		os.Exit(2)
	}
	files := flag.Args()
	if len(files) == 0 {
		files = []string{"-"}
	}
	var objects []object
	var problems []string
	for _, file := range files {
		objs, probs := load(file)
		objects = append(objects, objs...)
		problems = append(problems, probs...)
	}
	evaluator, err := policy.NewEvaluator(policy.DefaultChecks(), nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	lv := psapi.LevelVersion{Level: lvl, Version: psapi.LatestVersion()}
	templates := 0
	for _, obj := range objects {
		for _, p := range checkObject(obj) {
			problems = append(problems, fmt.Sprintf("%s: %s", obj, p))
		}
		if meta, spec := podTemplate(obj.value); spec != nil {
			templates++
			agg := policy.AggregateCheckResults(evaluator.EvaluatePod(lv, meta, spec))
			if !agg.Allowed {
				problems = append(problems, fmt.Sprintf("%s: violates PodSecurity %q: %s", obj, lv, agg.ForbiddenDetail()))
			}
		}
	}
	problems = append(problems, crossCheck(objects)...)
	for _, p := range problems {
		fmt.Println(p)
	}
	if len(problems) > 0 {
		fmt.Fprintf(os.Stderr, "%d problem(s) in %d object(s)\n", len(problems), len(objects))
		os.Exit(1)
	}
	if len(objects) == 0 {
		fmt.Fprintln(os.Stderr, "no objects: nothing was checked")
		os.Exit(1)
	}
	fmt.Printf("ok: %d objects (%s), %d pod template(s) pass PodSecurity %q\n",
		len(objects), summary(objects), templates, lv)
}

func summary(objects []object) string {
	count := map[string]int{}
	for _, o := range objects {
		count[o.gvk.Kind]++
	}
	var parts []string
	for kind, n := range count {
		parts = append(parts, fmt.Sprintf("%d %s", n, kind))
	}
	sort.Strings(parts)
	return strings.Join(parts, ", ")
}

// load decodes every document of a file strictly into its type.
func load(file string) ([]object, []string) {
	var in io.Reader = os.Stdin
	if file != "-" {
		f, err := os.Open(file)
		if err != nil {
			return nil, []string{err.Error()}
		}
		defer f.Close()
		in = f
	}
	reader := utilyaml.NewYAMLReader(bufio.NewReader(in))
	var objects []object
	var problems []string
	for n := 1; ; n++ {
		doc, err := reader.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		where := fmt.Sprintf("%s#%d", file, n)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			break
		}
		obj, err := decode(doc)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: %v", where, err))
			continue
		}
		if obj == nil {
			continue // an empty document: only comments (helm's "# Source:" lines)
		}
		obj.where = where
		objects = append(objects, *obj)
	}
	return objects, problems
}

func decode(doc []byte) (*object, error) {
	// YAMLToJSONStrict refuses a key given twice; UnmarshalStrict (case-sensitive, as the
	// API server's decoder) refuses unknown fields. Both are what `kubectl apply
	// --validate=strict` rejects.
	data, err := yaml.YAMLToJSONStrict(doc)
	if err != nil {
		return nil, err
	}
	if bytes.Equal(bytes.TrimSpace(data), []byte("null")) {
		return nil, nil
	}
	var tm metav1.TypeMeta
	if err := sigsjson.UnmarshalCaseSensitivePreserveInts(data, &tm); err != nil {
		return nil, fmt.Errorf("not an object: %v", err)
	}
	gvk := schema.FromAPIVersionAndKind(tm.APIVersion, tm.Kind)
	newValue, ok := kinds[gvk]
	if !ok {
		return nil, fmt.Errorf("apiVersion %q kind %q: not a type this validator knows", tm.APIVersion, tm.Kind)
	}
	value := newValue()
	strict, err := sigsjson.UnmarshalStrict(data, value, sigsjson.DisallowUnknownFields)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", gvk.Kind, err)
	}
	if len(strict) > 0 {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, fmt.Errorf("%s: strict decoding error: %s", gvk.Kind, strings.Join(msgs, ", "))
	}
	accessor, ok := value.(interface{ GetObjectMeta() metav1.Object })
	if !ok {
		return nil, fmt.Errorf("%s: no metadata", gvk.Kind)
	}
	meta, ok := accessor.GetObjectMeta().(*metav1.ObjectMeta)
	if !ok {
		return nil, fmt.Errorf("%s: unexpected metadata type", gvk.Kind)
	}
	return &object{gvk: gvk, meta: meta, value: value}, nil
}

// podTemplate returns the pod metadata and spec that a workload creates pods from.
func podTemplate(value any) (*metav1.ObjectMeta, *corev1.PodSpec) {
	switch o := value.(type) {
	case *corev1.Pod:
		return &o.ObjectMeta, &o.Spec
	case *appsv1.StatefulSet:
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *appsv1.Deployment:
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *appsv1.DaemonSet:
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *batchv1.Job:
		return &o.Spec.Template.ObjectMeta, &o.Spec.Template.Spec
	case *batchv1.CronJob:
		t := &o.Spec.JobTemplate.Spec.Template
		return &t.ObjectMeta, &t.Spec
	}
	return nil, nil
}

func workloadSelector(value any) *metav1.LabelSelector {
	switch o := value.(type) {
	case *appsv1.StatefulSet:
		return o.Spec.Selector
	case *appsv1.Deployment:
		return o.Spec.Selector
	case *appsv1.DaemonSet:
		return o.Spec.Selector
	}
	return nil
}

// checkObject applies the rules of the API server's validation that strict decoding cannot.
func checkObject(obj object) []string {
	var problems []string
	if obj.meta.Name == "" {
		problems = append(problems, "metadata.name: required")
	} else {
		for _, msg := range validation.IsDNS1123Subdomain(obj.meta.Name) {
			problems = append(problems, "metadata.name: "+msg)
		}
	}
	problems = append(problems, checkLabels("metadata.labels", obj.meta.Labels)...)
	if meta, spec := podTemplate(obj.value); spec != nil {
		switch obj.value.(type) {
		case *appsv1.StatefulSet, *appsv1.Deployment, *appsv1.DaemonSet:
			problems = append(problems, checkSelects("spec.selector", workloadSelector(obj.value), meta.Labels)...)
		}
		problems = append(problems, checkLabels("spec.template.metadata.labels", meta.Labels)...)
		problems = append(problems, checkPod(obj.value, spec)...)
	}
	switch o := obj.value.(type) {
	case *policyv1.PodDisruptionBudget:
		if (o.Spec.MinAvailable == nil) == (o.Spec.MaxUnavailable == nil) {
			problems = append(problems, "spec: exactly one of minAvailable and maxUnavailable")
		}
		if o.Spec.Selector == nil || len(o.Spec.Selector.MatchLabels)+len(o.Spec.Selector.MatchExpressions) == 0 {
			problems = append(problems, "spec.selector: empty (it would select every pod of the namespace)")
		}
	case *ScaledObject:
		problems = append(problems, checkScaledObject(o)...)
	case *TriggerAuthentication:
		problems = append(problems, checkTriggerAuthentication(o)...)
	case *monitoringv1.PodMonitor:
		if len(o.Spec.PodMetricsEndpoints) == 0 {
			problems = append(problems, "spec.podMetricsEndpoints: at least one is required")
		}
	}
	return problems
}

func checkLabels(path string, set map[string]string) []string {
	var problems []string
	for k, v := range set {
		for _, msg := range validation.IsQualifiedName(k) {
			problems = append(problems, fmt.Sprintf("%s: key %q: %s", path, k, msg))
		}
		for _, msg := range validation.IsValidLabelValue(v) {
			problems = append(problems, fmt.Sprintf("%s.%s: %s", path, k, msg))
		}
	}
	return problems
}

func checkSelects(path string, sel *metav1.LabelSelector, podLabels map[string]string) []string {
	if sel == nil {
		return []string{path + ": required"}
	}
	selector, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return []string{fmt.Sprintf("%s: %v", path, err)}
	}
	if selector.Empty() || !selector.Matches(labels.Set(podLabels)) {
		return []string{fmt.Sprintf("%s: %s does not select the template's labels %v", path, selector, podLabels)}
	}
	return nil
}

func checkPod(value any, spec *corev1.PodSpec) []string {
	var problems []string
	volumes := map[string]bool{}
	for _, v := range spec.Volumes {
		if volumes[v.Name] {
			problems = append(problems, fmt.Sprintf("volumes: %q twice", v.Name))
		}
		volumes[v.Name] = true
	}
	if sts, ok := value.(*appsv1.StatefulSet); ok {
		for _, claim := range sts.Spec.VolumeClaimTemplates {
			volumes[claim.Name] = true
			if _, ok := claim.Spec.Resources.Requests[corev1.ResourceStorage]; !ok {
				problems = append(problems, fmt.Sprintf("volumeClaimTemplates %q: no storage request", claim.Name))
			}
		}
	}
	containers := append(append([]corev1.Container{}, spec.InitContainers...), spec.Containers...)
	if len(spec.Containers) == 0 {
		problems = append(problems, "spec.containers: at least one is required")
	}
	for _, c := range containers {
		at := fmt.Sprintf("container %q", c.Name)
		if c.Image == "" {
			problems = append(problems, at+": image required")
		}
		ports := map[string]int32{}
		for _, p := range c.Ports {
			if p.Name != "" {
				for _, msg := range validation.IsValidPortName(p.Name) {
					problems = append(problems, fmt.Sprintf("%s: port name %q: %s", at, p.Name, msg))
				}
				ports[p.Name] = p.ContainerPort
			}
		}
		for _, m := range c.VolumeMounts {
			if !volumes[m.Name] {
				problems = append(problems, fmt.Sprintf("%s: volumeMount %q names no volume", at, m.Name))
			}
		}
		for name, probe := range map[string]*corev1.Probe{
			"livenessProbe": c.LivenessProbe, "readinessProbe": c.ReadinessProbe, "startupProbe": c.StartupProbe,
		} {
			if probe == nil {
				continue
			}
			var port *intstr.IntOrString
			switch {
			case probe.HTTPGet != nil:
				port = &probe.HTTPGet.Port
			case probe.TCPSocket != nil:
				port = &probe.TCPSocket.Port
			case probe.Exec != nil:
				if len(probe.Exec.Command) == 0 {
					problems = append(problems, fmt.Sprintf("%s: %s.exec.command: empty", at, name))
				}
			case probe.GRPC == nil:
				problems = append(problems, fmt.Sprintf("%s: %s: no handler", at, name))
			}
			if port != nil && port.Type == intstr.String {
				if _, ok := ports[port.StrVal]; !ok {
					problems = append(problems, fmt.Sprintf("%s: %s: port %q is not a named port of the container", at, name, port.StrVal))
				}
			}
		}
	}
	return problems
}

// crossCheck relates objects of the same rendering to each other.
func crossCheck(objects []object) []string {
	type pod struct {
		owner  object
		labels map[string]string
		spec   *corev1.PodSpec
	}
	var pods []pod
	configMaps := map[string]bool{}
	workloads := map[string]bool{} // Kind/name
	for _, o := range objects {
		if meta, spec := podTemplate(o.value); spec != nil {
			pods = append(pods, pod{o, meta.Labels, spec})
			workloads[o.gvk.Kind+"/"+o.meta.Name] = true
		}
		if o.gvk.Kind == "ConfigMap" {
			configMaps[o.meta.Name] = true
		}
	}
	selected := func(sel labels.Selector) []pod {
		var out []pod
		for _, p := range pods {
			if !sel.Empty() && sel.Matches(labels.Set(p.labels)) {
				out = append(out, p)
			}
		}
		return out
	}
	var problems []string
	for _, p := range pods {
		for _, v := range p.spec.Volumes {
			if v.ConfigMap != nil && !configMaps[v.ConfigMap.Name] && (v.ConfigMap.Optional == nil || !*v.ConfigMap.Optional) {
				problems = append(problems, fmt.Sprintf("%s: volume %q: ConfigMap %q is not among the objects", p.owner, v.Name, v.ConfigMap.Name))
			}
		}
	}
	for _, o := range objects {
		var sel *metav1.LabelSelector
		switch v := o.value.(type) {
		case *corev1.Service:
			if v.Spec.Selector == nil {
				continue
			}
			sel = &metav1.LabelSelector{MatchLabels: v.Spec.Selector}
		case *policyv1.PodDisruptionBudget:
			sel = v.Spec.Selector
		case *monitoringv1.PodMonitor:
			sel = &v.Spec.Selector
		case *ScaledObject:
			ref := v.Spec.ScaleTargetRef
			if ref == nil {
				continue
			}
			kind := ref.Kind
			if kind == "" {
				kind = "Deployment" // KEDA's default
			}
			if !workloads[kind+"/"+ref.Name] {
				problems = append(problems, fmt.Sprintf("%s: spec.scaleTargetRef %s/%s is not among the objects", o, kind, ref.Name))
			}
			continue
		default:
			continue
		}
		s, err := metav1.LabelSelectorAsSelector(sel)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s: selector: %v", o, err))
			continue
		}
		targets := selected(s)
		if len(targets) == 0 {
			problems = append(problems, fmt.Sprintf("%s: selector %s selects no pod template among the objects", o, s))
			continue
		}
		if pm, ok := o.value.(*monitoringv1.PodMonitor); ok {
			for i, ep := range pm.Spec.PodMetricsEndpoints {
				if ep.Port == nil {
					continue
				}
				for _, t := range targets {
					if !hasPort(t.spec, *ep.Port) {
						problems = append(problems, fmt.Sprintf("%s: spec.podMetricsEndpoints[%d].port %q is not a port of %s", o, i, *ep.Port, t.owner))
					}
				}
			}
		}
		if svc, ok := o.value.(*corev1.Service); ok {
			for _, sp := range svc.Spec.Ports {
				if sp.TargetPort.Type != intstr.String {
					continue
				}
				for _, t := range targets {
					if !hasPort(t.spec, sp.TargetPort.StrVal) {
						problems = append(problems, fmt.Sprintf("%s: targetPort %q is not a port of %s", o, sp.TargetPort.StrVal, t.owner))
					}
				}
			}
		}
	}
	return problems
}

func hasPort(spec *corev1.PodSpec, name string) bool {
	for _, c := range spec.Containers {
		for _, p := range c.Ports {
			if p.Name == name {
				return true
			}
		}
	}
	return false
}
